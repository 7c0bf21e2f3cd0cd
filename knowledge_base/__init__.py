"""The store's own data: storage models, importers, chunking, embeddings and retrieval."""
