"""ragtune.retriever"""
