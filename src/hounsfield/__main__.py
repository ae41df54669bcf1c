from hounsfield.cli import main

if __name__ == "__main__":  # spawned DICOM processes import this module too: they must not run the CLI
    main()
