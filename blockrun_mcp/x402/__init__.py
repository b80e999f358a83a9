"""x402 v2 client: protocol models, header codecs, signing policy, EIP-3009 signing, the 402 dance.

Nothing here imports MCP or reads environment variables; callers pass everything in.
"""
