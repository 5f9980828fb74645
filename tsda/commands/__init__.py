"""One module per `tsda` command: its parser and `main(argv)`; nothing outside this package imports it."""
