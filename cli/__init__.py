"""The composition root: the `auxcord` command, the demo and the web-server launcher.

It may import every component; nothing imports it.
"""
