"""server/gates"""
