"""Instruction-data helpers: loading, validation, tables."""
