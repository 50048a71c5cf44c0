from metalctl.cli import main

main()
