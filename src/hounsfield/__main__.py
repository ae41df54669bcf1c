from hounsfield.cli import main

main()
