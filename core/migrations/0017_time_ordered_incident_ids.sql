-- Incident ids ordered by the time they were made (UUID version 7, RFC 9562): 48 bits of Unix
-- time in milliseconds, then the version, the variant and random bits. A random id (version 4)
-- puts each new incident on a page of its own in every index the id leads (the incidents' key,
-- the timeline's and the notifications' incident indexes, the notifications' dedupe keys):
-- after each checkpoint the first change to each such page writes the whole page to the WAL
-- again, and none of those pages stays cold. The worker's batches make their ids the same way
-- (core/ids.py); this is the default of the incidents opened one at a time. Ids made before
-- stay as they are: both kinds are UUIDs, and nothing reads an order into them.
CREATE OR REPLACE FUNCTION pingan_uuid7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
               set_bit(set_bit(
                   overlay(uuid_send(gen_random_uuid())
                           PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                           FROM 1 FOR 6),
                   52, 1), 53, 1),
               'hex')::uuid
$$;

ALTER TABLE incidents ALTER COLUMN incident_id SET DEFAULT pingan_uuid7();
