"""alignflow/demo"""
