"""Defenses against backdoor poisoning, one module per method (each opens with its paper and section)."""
