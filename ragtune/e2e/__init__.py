"""ragtune.e2e"""
