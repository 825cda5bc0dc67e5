"""Development tools: the Spotify simulator, the local service stack and the Chromium helper.

They stand in for production services on a laptop and in tests; production never imports them.
"""
