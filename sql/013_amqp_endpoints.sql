-- Broker endpoints (issue 15): an endpoint is either a URL events are POSTed to (kind http,
-- as before) or an exchange and routing key on the operator's RabbitMQ (GROUPBUY_AMQP_URL)
-- events are published to (kind amqp), through the same outbox and delivery records.
-- An amqp endpoint's url is '' (kept NOT NULL: deliveries copy it, and no lock's notifyUrl,
-- always an absolute URL, can name it). exchange '' is the broker's default exchange (which
-- routes by queue name).

ALTER TABLE endpoint
    ADD COLUMN kind        text NOT NULL DEFAULT 'http'
                           CONSTRAINT endpoint_kind_check CHECK (kind IN ('http', 'amqp')),
    ADD COLUMN exchange    text,
    ADD COLUMN routing_key text,
    ADD CONSTRAINT endpoint_destination_check CHECK (
        CASE kind
            WHEN 'http' THEN url <> '' AND exchange IS NULL AND routing_key IS NULL
            ELSE url = '' AND exchange IS NOT NULL AND routing_key IS NOT NULL
        END);

COMMENT ON COLUMN endpoint.kind IS
    'http: events are POSTed to url; amqp: published to exchange with routing_key on the'
    ' RabbitMQ of GROUPBUY_AMQP_URL (url is then empty).';
