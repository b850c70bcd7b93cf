"""The GUI's objects without a face: the edited config, child-process controllers, pool workers, the scanner.

Also the names and helpers of the UI settings kept in ``QSettings``. Services may import
the engine and one another, never a widget or a page. Nothing is imported here eagerly.
"""
