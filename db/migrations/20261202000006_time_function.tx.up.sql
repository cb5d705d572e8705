-- A relative-date leg (contract §3.6) reads a property as a time: a string
-- holding a date YYYY-MM-DD (midnight UTC) or an RFC 3339 timestamp with at
-- most nanoseconds (kept to the microsecond, dropping the rest) and an
-- offset. Anything else — another type, another format, an impossible date
-- such as 2026-02-30, the year 0 — is NULL, never an error: one contact's
-- bad value must not fail a sweep. buckets.ParseTime is the same rule in Go.
--
-- Single SQL expressions, so the planner inlines them: a PL/pgSQL version
-- cost 55 µs a call, this one 4. They are STABLE because the text casts
-- are, though the strings they cast (ISO dates, explicit offsets) read the
-- same under every DateStyle and TimeZone. A CASE, not OR, orders the
-- checks: the day is read as a number only once the pattern holds.
CREATE OR REPLACE FUNCTION bucket_worker_time_text(s text) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN s !~ '^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))?$'
            THEN NULL
        WHEN left(s, 4) = '0000' THEN NULL
        WHEN substr(s, 9, 2)::int > CASE substr(s, 6, 2)
                WHEN '02' THEN CASE WHEN left(s, 4)::int % 4 = 0 AND (left(s, 4)::int % 100 <> 0 OR left(s, 4)::int % 400 = 0)
                    THEN 29 ELSE 28 END
                WHEN '04' THEN 30 WHEN '06' THEN 30 WHEN '09' THEN 30 WHEN '11' THEN 30
                ELSE 31 END
            THEN NULL
        WHEN length(s) = 10 THEN s::timestamp AT TIME ZONE 'UTC'
        -- The local time keeps at most 26 characters: microseconds.
        WHEN right(s, 1) = 'Z' THEN left(left(s, -1), 26)::timestamp AT TIME ZONE 'UTC'
        ELSE (left(left(s, -6), 26)::timestamp - right(s, 6)::interval) AT TIME ZONE 'UTC'
    END
$$;

CREATE OR REPLACE FUNCTION bucket_worker_time(v jsonb) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'string' THEN bucket_worker_time_text(v #>> '{}') END
$$;
