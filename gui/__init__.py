"""Transfer Studio's Qt GUI: thin widgets over the engine; nothing imports this package.

``services`` holds the objects without a face (the edited config, the child-process
controllers, pool workers, the scanner, UI settings), ``widgets`` the pieces several
pages share, and ``pages`` one package per sidebar page. ``app`` starts the
application and ``main_window`` builds the window from the table of pages.

Nothing is imported here, so that ``import gui.app`` loads only what the window needs.
"""
