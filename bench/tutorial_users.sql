-- The FastAPI tutorial's `users` table, as SQLAlchemy's `create_all` makes it from the tutorial's
-- model, filled with :rows users. Their hashes have passlib's format ($2b$12$, then 53 characters
-- of bcrypt's base64) without running bcrypt: an import never checks a password, so what it
-- costs does not depend on whether the hashes verify anything.
--
--   psql URL -v rows=100000 -f bench/tutorial_users.sql
--
-- tests/http/import.rs builds its table with rows=0, then inserts hashes of real passwords.
CREATE TABLE users (
    id SERIAL NOT NULL,
    email VARCHAR,
    hashed_password VARCHAR,
    PRIMARY KEY (id)
);
CREATE UNIQUE INDEX ix_users_email ON users (email);
CREATE INDEX ix_users_id ON users (id);

INSERT INTO users (email, hashed_password)
SELECT 'user' || i || '@tutorial.example.com',
       -- 64 pseudo-random bytes in base64 ('+' is not in bcrypt's alphabet: '.' instead), cut
       -- to the 53 characters of salt and digest.
       '$2b$12$' || substr(translate(encode(decode(
           md5(i::text) || md5((i + 7)::text) || md5((i + 13)::text) || md5((i + 17)::text),
           'hex'), 'base64'), '+', '.'), 1, 53)
FROM generate_series(1, :rows) AS i;
