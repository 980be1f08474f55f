from omnirun.cli import main

main()
