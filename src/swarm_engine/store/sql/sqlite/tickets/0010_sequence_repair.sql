-- Sequence repair (PostgreSQL's 0010: a guard refusing ids at or above 2^62, and a
-- wedged identity sequence repaired by the store). SQLite has had both since 0008/0009;
-- nothing to change: this step keeps the two dialects' schema versions in step.
SELECT 1;
