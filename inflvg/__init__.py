"""InfLVG core: StoryWorld, the frame-autoregressive generator, context strategies.

The core imports only numpy and torch (lazily, inside the modules that need it);
it never imports Ray or a role package.
"""

__version__ = "0.1.0"
