-- A relative-date leg (contract §3.6) reads a property as a time: a string
-- holding a date YYYY-MM-DD (midnight UTC) or an RFC 3339 timestamp with at
-- most nanoseconds (kept to the microsecond, dropping the rest) and an
-- offset. Anything else — another type, another format, an impossible date
-- such as 2026-02-30, the year 0 — is NULL, never an error: one contact's
-- bad value must not fail a sweep. buckets.ParseTime is the same rule in Go.
CREATE OR REPLACE FUNCTION bucket_worker_time(v jsonb) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    m text[];
    y int;
    mo int;
    d int;
    t timestamp;
BEGIN
    IF jsonb_typeof(v) IS DISTINCT FROM 'string' THEN
        RETURN NULL;
    END IF;
    m := regexp_match(v #>> '{}',
        '^([0-9]{4})-([0-9]{2})-([0-9]{2})(?:T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(?:Z|([+-])([0-9]{2}):([0-9]{2})))?$');
    IF m IS NULL THEN
        RETURN NULL;
    END IF;
    y := m[1]::int;
    mo := m[2]::int;
    d := m[3]::int;
    IF y < 1 OR mo < 1 OR mo > 12 OR d < 1
        OR d > extract(day FROM make_date(y, mo, 1) + interval '1 month' - interval '1 day') THEN
        RETURN NULL;
    END IF;
    t := make_date(y, mo, d);
    IF m[4] IS NOT NULL THEN
        IF m[4]::int > 23 OR m[5]::int > 59 OR m[6]::int > 59 THEN
            RETURN NULL;
        END IF;
        t := t + make_interval(hours => m[4]::int, mins => m[5]::int)
            + (m[6]::bigint * 1000000 + coalesce(rpad(left(m[7], 6), 6, '0')::bigint, 0)) * interval '1 microsecond';
        IF m[8] IS NOT NULL THEN
            IF m[9]::int > 23 OR m[10]::int > 59 THEN
                RETURN NULL;
            END IF;
            IF m[8] = '+' THEN
                t := t - make_interval(hours => m[9]::int, mins => m[10]::int);
            ELSE
                t := t + make_interval(hours => m[9]::int, mins => m[10]::int);
            END IF;
        END IF;
    END IF;
    RETURN t AT TIME ZONE 'UTC';
END
$$;
