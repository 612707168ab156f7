"""The node's database: schema and migrations (:mod:`.schema`), the writer with group commit
(:mod:`.store`), typed queries (:mod:`.queries`) and the kinds its columns hold (:mod:`.kinds`).
No SQL outside this package."""
