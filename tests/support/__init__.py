"""Helpers shared by the test modules (fixtures live in tests/conftest.py).

- payer: our own payer and gateway client against the sandbox, and the x402 SDK's verdict on
  every payment the sandbox received;
- judge: the official x402 SDK's exact-EVM verifier, run offline;
- security: what the sandbox saw, checked against the ledger (fault, property, security tests);
- server: a real MCP server over the sandbox, driven by a real MCP client;
- cli: the command line's environment, a JSON-RPC balance stub and ledgers of every kind.
"""
