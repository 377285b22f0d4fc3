"""The pack as an extension for the Automatic1111 family of WebUIs (Forge, Forge Neo, reForge, A1111).

``scripts/deblur.py`` (the WebUI's entry point) loads this package by location. ``backend.py`` is the
only module touching the WebUI's ``modules.*``; ``adapter.py`` holds the argument handling both the
Extras step and the API route share, and runs without the WebUI (unit tests).
"""
