"""agent/optimize"""
