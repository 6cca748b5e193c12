-- Tickets the hub opened in the helpdesk, by the hub's own reference (idempotent write-back).
CREATE TABLE helpdesk_tickets (
    hub_ref    TEXT   PRIMARY KEY,
    ticket_id  BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
