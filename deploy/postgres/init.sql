-- The demo database the demo-readonly role reads.
CREATE DATABASE demo;
\connect demo
CREATE TABLE greetings (id serial PRIMARY KEY, message text NOT NULL);
INSERT INTO greetings (message) VALUES ('hello from agent-bridge');
