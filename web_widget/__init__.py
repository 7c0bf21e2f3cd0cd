"""The browser side, shipped as package data: the storefront widget (``widget.js``), the demo
storefront page (``demo.*``) and the agent console (``console.*``).

There is no Python here. The folder is a package only so that the wheel carries its files and
the server finds them with :mod:`importlib.resources` wherever the project is installed (see
``chatbot.server.app.STATIC_DIR``). Only the top-level files are packaged and served; ``tests/``
(the widget's JavaScript tests) stays in the source tree.
"""
