"""agent/engine"""
