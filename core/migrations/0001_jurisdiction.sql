-- The jurisdiction tree: city -> district/county -> township/street -> community/village -> grid cell.
-- Codes follow GB/T 2260: a 6-digit administrative division code for the city and its
-- districts, then 3 digits each for street, community and grid sequence (15 digits for a grid).
CREATE TABLE units (
    code        text PRIMARY KEY,
    level       text NOT NULL CHECK (level IN ('city', 'district', 'street', 'community', 'grid')),
    parent_code text REFERENCES units (code),
    name        text NOT NULL,
    name_en     text NOT NULL DEFAULT '',
    -- codes of every ancestor and the unit itself, root first: subtree queries use it
    path        text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT units_code_shape CHECK (
        (level IN ('city', 'district') AND code ~ '^[0-9]{6}$')
        OR (level = 'street' AND code ~ '^[0-9]{9}$')
        OR (level = 'community' AND code ~ '^[0-9]{12}$')
        OR (level = 'grid' AND code ~ '^[0-9]{15}$')
    ),
    CONSTRAINT units_parent CHECK ((level = 'city') = (parent_code IS NULL)),
    CONSTRAINT units_path_ends_with_self CHECK (path[array_length(path, 1)] = code)
);
CREATE INDEX units_parent_idx ON units (parent_code);
CREATE INDEX units_path_idx ON units USING gin (path);

CREATE TABLE officers (
    officer_id text PRIMARY KEY,
    unit_code  text NOT NULL REFERENCES units (code),
    name       text NOT NULL,
    role       text NOT NULL CHECK (role IN ('grid_officer', 'duty_officer', 'admin')),
    phone      text NOT NULL DEFAULT '',
    on_duty    boolean NOT NULL DEFAULT true,
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX officers_unit_idx ON officers (unit_code) WHERE active AND on_duty;

CREATE TABLE devices (
    device_id          text PRIMARY KEY,
    grid_code          text NOT NULL REFERENCES units (code),
    kind               text NOT NULL,
    address            text NOT NULL DEFAULT '',
    resident_note      text NOT NULL DEFAULT '',
    active             boolean NOT NULL DEFAULT true,
    -- mosquitto password-file entry ($7$ PBKDF2-SHA512); the password itself is never stored
    mqtt_password_hash text,
    online             boolean,
    last_seen_at       timestamptz,
    battery            integer,
    last_seq           bigint,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_grid_idx ON devices (grid_code);
