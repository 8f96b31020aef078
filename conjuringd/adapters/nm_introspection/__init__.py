"""NetworkManager D-Bus introspection XML (only the members conjuringd uses), loaded with Node.parse."""
