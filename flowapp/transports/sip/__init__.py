"""Calls over SIP and RTP: flowapp as a SIP endpoint that PBXes, trunks and SBCs call directly.

`message` parses and builds SIP messages, `sdp` negotiates the media, `rtp` carries G.711 audio and
RFC 4733 telephone events, `guard` decides who may call, `agent` is the user agent that answers calls
and runs each as a live call in the engine.
"""
