"""The gallery store: a user's library in Milvus (Lite on one machine, a cluster at scale), searched online.

    engine     which Milvus a URI names, and its client
    schema     collection names, fields, index configuration, filter literals
    hits       what a search returns
    gallery    GalleryStore: one model's galleries, written by `index add`, searched by the transformer
    transfer   index files in and out of a store; what `index stats` lists
"""

from serving.store.engine import TOKEN_ENV, TOKEN_FILE_ENV, Connection, ModelMismatchError, StoreError, connection
from serving.store.gallery import LIVE, REBUILD, GalleryStore
from serving.store.hits import StoreHits
from serving.store.schema import IMPORTED, IndexConfig, ItemMeta, check_item_id, collection_name, entry_key
from serving.store.transfer import export_index, import_index, store_collections

__all__ = ["LIVE", "REBUILD", "TOKEN_ENV", "TOKEN_FILE_ENV", "IMPORTED", "Connection", "GalleryStore", "IndexConfig", "ItemMeta",
           "ModelMismatchError", "StoreError", "StoreHits", "check_item_id", "collection_name", "connection", "entry_key",
           "export_index", "import_index", "store_collections"]
