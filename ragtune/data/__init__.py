"""ragtune.data"""
