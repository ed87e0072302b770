"""ragtune.generator"""
