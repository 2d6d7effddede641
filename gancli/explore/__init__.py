"""gancli explore: a local web server and one page over a run's generators.

`server` holds the server (routes, checks, rendering); `static/` the page (our own HTML, JS and
CSS, shipped as package data; it loads nothing from the network).
"""

from gancli.explore.server import Explorer, make_server

__all__ = ["Explorer", "make_server"]
