-- Id guard (h-119 report, 2): SQLite's 0007 refuses ids above 2^62 because there a row
-- with id 2^63-1 spends the AUTOINCREMENT sequence for good. Here an identity sequence
-- does not follow ids written explicitly, so such a row blocks nothing; a sequence an
-- operator set to its maximum fails `nextval` with SQLSTATE 2200H, which the store reports
-- as a permanent error (never "busy"). Nothing to change: this step keeps the two
-- dialects' schema versions in step.
SELECT 1;
