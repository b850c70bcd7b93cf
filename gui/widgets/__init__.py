"""Widgets that several pages share: bound form fields, the message panel, the page header, the model
chooser, thumbnail grids and galleries, elided labels, fitted images, the plots' theme and look-ups of
table and tree items.

Widgets may import services and the engine, never a page. Nothing is imported here eagerly.
"""
