"""An example omnirun plugin: the `echo` backend (`omnirun_echo.backend`) and the `count_words` task
(`omnirun_echo.task`). Nothing inside omnirun names either; pyproject.toml registers them."""
