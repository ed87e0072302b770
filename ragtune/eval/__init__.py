"""ragtune.eval"""
