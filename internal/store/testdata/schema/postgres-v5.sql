--
-- PostgreSQL database dump
--

\restrict 8PgH9hvchMtHNutNX9kdfmKVnLTdvbIGWq16AtuvvMoVfMWSrFl4i3RMpKMk40y

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: kiln_object_changed(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.kiln_object_changed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
	IF TG_OP = 'DELETE' AND OLD.kind = 'Lease' OR TG_OP <> 'DELETE' AND NEW.kind = 'Lease' THEN
		RETURN NULL; -- an AFTER trigger's result is ignored
	END IF;
	IF TG_OP = 'DELETE' THEN
		INSERT INTO changes (kind, name, type, labels, annotations, spec, status, resource_version, created_at, updated_at)
		VALUES (OLD.kind, OLD.name, 'DELETED', OLD.labels, OLD.annotations, OLD.spec, OLD.status, OLD.resource_version, OLD.created_at, OLD.updated_at);
		RETURN OLD;
	END IF;
	INSERT INTO changes (kind, name, type, labels, annotations, spec, status, resource_version, created_at, updated_at)
	VALUES (NEW.kind, NEW.name, CASE TG_OP WHEN 'INSERT' THEN 'ADDED' ELSE 'MODIFIED' END,
		NEW.labels, NEW.annotations, NEW.spec, NEW.status, NEW.resource_version, NEW.created_at, NEW.updated_at);
	RETURN NEW;
END
$$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: api_tokens; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.api_tokens (
    id text NOT NULL COLLATE pg_catalog."C",
    name text NOT NULL,
    role text NOT NULL,
    hash text NOT NULL,
    created_at bigint NOT NULL,
    revoked_at bigint
);


--
-- Name: audit; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.audit (
    seq bigint NOT NULL,
    "time" bigint NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    kind text NOT NULL,
    name text NOT NULL,
    summary text NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL
);


--
-- Name: changes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.changes (
    seq bigint NOT NULL,
    kind text NOT NULL COLLATE pg_catalog."C",
    name text NOT NULL COLLATE pg_catalog."C",
    type text NOT NULL,
    labels text NOT NULL,
    spec text NOT NULL,
    status text NOT NULL,
    resource_version bigint NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    annotations text DEFAULT '{}'::text NOT NULL
);


--
-- Name: changes_seq_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.changes ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.changes_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.events (
    id bigint NOT NULL,
    machine text NOT NULL COLLATE pg_catalog."C",
    "time" bigint NOT NULL,
    type text NOT NULL,
    message text NOT NULL
);


--
-- Name: events_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: meta; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.meta (
    id integer NOT NULL,
    audit_seq bigint NOT NULL,
    audit_hash text NOT NULL,
    keys_version bigint DEFAULT 0 NOT NULL,
    events_floor bigint DEFAULT 0 NOT NULL,
    changes_floor bigint DEFAULT 0 NOT NULL,
    CONSTRAINT meta_id_check CHECK ((id = 1))
);


--
-- Name: object_keys; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.object_keys (
    kind text NOT NULL COLLATE pg_catalog."C",
    key text NOT NULL COLLATE pg_catalog."C",
    name text NOT NULL COLLATE pg_catalog."C"
);


--
-- Name: objects; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.objects (
    kind text NOT NULL COLLATE pg_catalog."C",
    name text NOT NULL COLLATE pg_catalog."C",
    labels text DEFAULT '{}'::text NOT NULL,
    spec text DEFAULT ''::text NOT NULL,
    status text DEFAULT ''::text NOT NULL,
    resource_version bigint NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    annotations text DEFAULT '{}'::text NOT NULL
);


--
-- Name: schema_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.schema_migrations (
    version bigint NOT NULL,
    name text NOT NULL,
    applied_at bigint NOT NULL
);


--
-- Name: secret_handles; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.secret_handles (
    id_hash text NOT NULL COLLATE pg_catalog."C",
    secret text NOT NULL COLLATE pg_catalog."C",
    version bigint NOT NULL,
    machine text NOT NULL COLLATE pg_catalog."C",
    channel text NOT NULL,
    expires_at bigint NOT NULL,
    used_at bigint,
    created_at bigint NOT NULL
);


--
-- Name: secret_kek; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.secret_kek (
    id integer NOT NULL,
    kek_id text NOT NULL,
    updated_at bigint NOT NULL,
    CONSTRAINT secret_kek_id_check CHECK ((id = 1))
);


--
-- Name: secret_versions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.secret_versions (
    name text NOT NULL COLLATE pg_catalog."C",
    version bigint NOT NULL,
    kek_id text NOT NULL,
    wrapped_dek bytea NOT NULL,
    nonce bytea NOT NULL,
    ciphertext bytea NOT NULL,
    created_at bigint NOT NULL,
    created_by text DEFAULT ''::text NOT NULL
);


--
-- Name: webhook_cursors; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.webhook_cursors (
    name text NOT NULL COLLATE pg_catalog."C",
    seq bigint NOT NULL,
    owner text NOT NULL,
    lease_until bigint NOT NULL,
    updated_at bigint NOT NULL
);


--
-- Name: webhook_deliveries; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.webhook_deliveries (
    id bigint NOT NULL,
    webhook text NOT NULL COLLATE pg_catalog."C",
    seq bigint NOT NULL,
    type text NOT NULL,
    state text NOT NULL,
    attempts integer NOT NULL,
    last_status integer NOT NULL,
    last_error text NOT NULL,
    "time" bigint NOT NULL
);


--
-- Name: webhook_deliveries_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.webhook_deliveries ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.webhook_deliveries_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Data for Name: api_tokens; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.api_tokens (id, name, role, hash, created_at, revoked_at) FROM stdin;
a5dfcf930b2f	bootstrap-admin	admin	36b1b49e90db28ade4aeaabf58362f67c8134403ccb45bb1a50ae6505fb33269	1796626964112899735	\N
93a73938c254	ci	viewer	875f55415597167aa90dc482b997b99929d4ccad1ffa87930a3b195d2ade2cf8	1796626964250004840	\N
\.


--
-- Data for Name: audit; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.audit (seq, "time", actor, action, kind, name, summary, prev_hash, hash) FROM stdin;
1	1796626964108982842	system	chain-keyed	AuditChain	chain	audit chain keyed (HMAC-SHA256) from this entry on	0000000000000000000000000000000000000000000000000000000000000000	7de48728f4e8e2d706a9a6aa5a2029a3b9cea7d6e4a30250bd7c44182356e43b
2	1796626964113452817	system	create	APIToken	a5dfcf930b2f	created: role admin, name "bootstrap-admin" (first start)	7de48728f4e8e2d706a9a6aa5a2029a3b9cea7d6e4a30250bd7c44182356e43b	9f1803db5215fba047641346ba65fec96d9603f9e2f7c02b7a77f9e4da8e3a44
3	1796626964122580699	system	create	EnrollAuthority	default	certificate authority created (ECDSA P-256), fingerprint 3a1b2af648573b6dfe4fbb7a157222ef6467519e8ec11e16bc23a6bdbc0ab054; token signing key created (ed25519)	9f1803db5215fba047641346ba65fec96d9603f9e2f7c02b7a77f9e4da8e3a44	2f700a52fd8ee6a452a83d6b80c01b8fc70edc061d76f8513b352d6ea6407eab
4	1796626964200779236	token:a5dfcf930b2f	create	Secret	db-password	created: spec.machines	2f700a52fd8ee6a452a83d6b80c01b8fc70edc061d76f8513b352d6ea6407eab	322f1bbe065b1e759b48709d17c8754c0c3c4dbf5239dcec7307bffdeae507af
5	1796626964207725545	token:a5dfcf930b2f	create	Profile	base	created: spec.boot	322f1bbe065b1e759b48709d17c8754c0c3c4dbf5239dcec7307bffdeae507af	c848c229ef3aa37b7d216046a9b6752321ee55bf49727f565d381299d06a98ea
6	1796626964209217250	token:a5dfcf930b2f	create	Subnet	lab	created: spec.bootServer, spec.cidr, spec.interfaces, spec.leaseTime, spec.mode, spec.pools	c848c229ef3aa37b7d216046a9b6752321ee55bf49727f565d381299d06a98ea	2d6593b59d78748a5c68ba83adfe29ee5088ae2f3d575b4bb5f69ba12ad7eca4
7	1796626964212319311	token:a5dfcf930b2f	create	Machine	web-1	created: metadata.labels.role, spec.interfaces, spec.profile	2d6593b59d78748a5c68ba83adfe29ee5088ae2f3d575b4bb5f69ba12ad7eca4	8be93445b910890b641f3b88e71b477d0f692ad5d73528eecefca2e40f94829a
8	1796626964218737894	token:a5dfcf930b2f	create	Machine	web-2	created: metadata.labels.role, spec.interfaces, spec.profile	8be93445b910890b641f3b88e71b477d0f692ad5d73528eecefca2e40f94829a	d1f2880952ec4db24b6976c4617571ff6b729b9e495cb57bdcdc3c8ef27ea3ed
9	1796626964220522045	token:a5dfcf930b2f	create	JoinToken	jt-1	created: spec.maxUses, spec.profile	d1f2880952ec4db24b6976c4617571ff6b729b9e495cb57bdcdc3c8ef27ea3ed	16d53e88624409b642303a6ee52c199b73145a8123c5e1c125d3efba943b8dff
10	1796626964250718160	token:a5dfcf930b2f	create	APIToken	93a73938c254	created: role viewer, name "ci"	16d53e88624409b642303a6ee52c199b73145a8123c5e1c125d3efba943b8dff	4c5244bbca74e29eff3c7cadd4c56deeaba9f09351236fdf905b2e55b01413c6
11	1796626964328368604	token:a5dfcf930b2f	set-value	Secret	db-password	stored version 1, encrypted (data key wrapped by key-encryption key 2b2d7d9767d1c056)	4c5244bbca74e29eff3c7cadd4c56deeaba9f09351236fdf905b2e55b01413c6	65747b2f46bbd0e3b5e705893d39a3e470114e1c7743381e0955db96876481ff
\.


--
-- Data for Name: changes; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.changes (seq, kind, name, type, labels, spec, status, resource_version, created_at, updated_at, annotations) FROM stdin;
1	EnrollAuthority	default	ADDED	{}	{"certificate":"-----BEGIN CERTIFICATE-----\\nMIIBmDCCAT2gAwIBAgIQVcBM+q77VyWZU8Qd2D6nBDAKBggqhkjOPQQDAjAqMQ0w\\nCwYDVQQKEwRLaWxuMRkwFwYDVQQDExBLaWxuIENBIDU5YThmNWUzMB4XDTI2MTIw\\nNzA2MDI0NFoXDTM2MTIwNzA3MDI0NFowKjENMAsGA1UEChMES2lsbjEZMBcGA1UE\\nAxMQS2lsbiBDQSA1OWE4ZjVlMzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNg/\\nfr2RID21iaEEbViZzH6e7+knB/SMB+b0yxudstpRBC54FN5a2obcDSgO76FjYyPH\\nnVj8yyPX3AbGoBIqsz2jRTBDMA4GA1UdDwEB/wQEAwIBhjASBgNVHRMBAf8ECDAG\\nAQH/AgEAMB0GA1UdDgQWBBRMehOrN7M/22lKuMK2l5U+LFWg8zAKBggqhkjOPQQD\\nAgNJADBGAiEA2m93K+MO2OR5Lne28sOFuyiDflmKsYYZlt2zIYt56P0CIQD/4wa5\\nL3wggBrrgfDNcpt5xguq6EvXvJDTCo5oDHqMUg==\\n-----END CERTIFICATE-----\\n","key":"kiln-seal-v1:kfXX/EAK2do2flpxo9J9D+b+86XzxCOHoYaoKzuW1CQ7XAkHMBL/rJAaHY7Oz4bKfo0x5sdIPI0O8DI38Pq4AP08FboLTi0Q50suOy7sx3EjngQXmDoDjYNP9mecTYZPmRICsLRie54xBgOyoB4M5mbTNp9FhVk7zb3EuWIBkmNyS1+bteyqeE+QiGYKdKs/TX7mIGLlPXeJ9gqn3kifnyP9v2tnKg==","tokenKey":"kiln-seal-v1:4uXZFFmlLULjHsErVENdotwr8izTaK/7fvgqGEv5lAdfQAa5dytJhbysOnQWhon76tMutKR5zZsMBXcKDwXiP4Q4HHkakhn8kYDrgQ==","kekId":"2b2d7d9767d1c056"}		1	1796626964125992118	1796626964125992118	{}
2	Secret	db-password	ADDED	{}	{"machines":["web-1"]}		1	1796626964196096874	1796626964196096874	{}
3	Profile	base	ADDED	{}	{"boot":{"agent":true}}		1	1796626964207302295	1796626964207302295	{}
4	Subnet	lab	ADDED	{}	{"cidr":"10.78.0.0/24","mode":"full","pools":[{"start":"10.78.0.100","end":"10.78.0.199"}],"leaseTime":"1h","bootServer":"10.78.0.1","interfaces":["kfh2512"]}		1	1796626964208859051	1796626964208859051	{}
5	Machine	web-1	ADDED	{"role":"web"}	{"profile":"base","interfaces":[{"mac":"52:54:00:77:00:01","ip":"10.78.0.21","hostname":"web-1"}]}	{"state":"new"}	1	1796626964210462725	1796626964210462725	{}
6	Machine	web-2	ADDED	{"role":"web"}	{"profile":"base","interfaces":[{"mac":"52:54:00:77:00:02"}]}	{"state":"new"}	1	1796626964214760178	1796626964214760178	{}
7	JoinToken	jt-1	ADDED	{}	{"profile":"base","maxUses":3}		1	1796626964220202649	1796626964220202649	{}
8	Secret	db-password	MODIFIED	{}	{"machines":["web-1"]}	{"version":1}	2	1796626964196096874	1796626964327706327	{}
\.


--
-- Data for Name: events; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.events (id, machine, "time", type, message) FROM stdin;
1	web-1	1796626964212319311	InventoryCreate	created: metadata.labels.role, spec.interfaces, spec.profile by token:a5dfcf930b2f
2	web-2	1796626964218737894	InventoryCreate	created: metadata.labels.role, spec.interfaces, spec.profile by token:a5dfcf930b2f
3	web-2	1796626964361409389	DHCPOffer	offered 10.78.0.100 on subnet lab
4	web-2	1796626964371861843	DHCPAck	leased 10.78.0.100 on subnet lab for 1h0m0s (selecting)
\.


--
-- Data for Name: meta; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.meta (id, audit_seq, audit_hash, keys_version, events_floor, changes_floor) FROM stdin;
1	11	65747b2f46bbd0e3b5e705893d39a3e470114e1c7743381e0955db96876481ff	1	0	0
\.


--
-- Data for Name: object_keys; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.object_keys (kind, key, name) FROM stdin;
Machine	mac:52:54:00:77:00:01	web-1
Machine	mac:52:54:00:77:00:02	web-2
\.


--
-- Data for Name: objects; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.objects (kind, name, labels, spec, status, resource_version, created_at, updated_at, annotations) FROM stdin;
EnrollAuthority	default	{}	{"certificate":"-----BEGIN CERTIFICATE-----\\nMIIBmDCCAT2gAwIBAgIQVcBM+q77VyWZU8Qd2D6nBDAKBggqhkjOPQQDAjAqMQ0w\\nCwYDVQQKEwRLaWxuMRkwFwYDVQQDExBLaWxuIENBIDU5YThmNWUzMB4XDTI2MTIw\\nNzA2MDI0NFoXDTM2MTIwNzA3MDI0NFowKjENMAsGA1UEChMES2lsbjEZMBcGA1UE\\nAxMQS2lsbiBDQSA1OWE4ZjVlMzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNg/\\nfr2RID21iaEEbViZzH6e7+knB/SMB+b0yxudstpRBC54FN5a2obcDSgO76FjYyPH\\nnVj8yyPX3AbGoBIqsz2jRTBDMA4GA1UdDwEB/wQEAwIBhjASBgNVHRMBAf8ECDAG\\nAQH/AgEAMB0GA1UdDgQWBBRMehOrN7M/22lKuMK2l5U+LFWg8zAKBggqhkjOPQQD\\nAgNJADBGAiEA2m93K+MO2OR5Lne28sOFuyiDflmKsYYZlt2zIYt56P0CIQD/4wa5\\nL3wggBrrgfDNcpt5xguq6EvXvJDTCo5oDHqMUg==\\n-----END CERTIFICATE-----\\n","key":"kiln-seal-v1:kfXX/EAK2do2flpxo9J9D+b+86XzxCOHoYaoKzuW1CQ7XAkHMBL/rJAaHY7Oz4bKfo0x5sdIPI0O8DI38Pq4AP08FboLTi0Q50suOy7sx3EjngQXmDoDjYNP9mecTYZPmRICsLRie54xBgOyoB4M5mbTNp9FhVk7zb3EuWIBkmNyS1+bteyqeE+QiGYKdKs/TX7mIGLlPXeJ9gqn3kifnyP9v2tnKg==","tokenKey":"kiln-seal-v1:4uXZFFmlLULjHsErVENdotwr8izTaK/7fvgqGEv5lAdfQAa5dytJhbysOnQWhon76tMutKR5zZsMBXcKDwXiP4Q4HHkakhn8kYDrgQ==","kekId":"2b2d7d9767d1c056"}		1	1796626964125992118	1796626964125992118	{}
Profile	base	{}	{"boot":{"agent":true}}		1	1796626964207302295	1796626964207302295	{}
Subnet	lab	{}	{"cidr":"10.78.0.0/24","mode":"full","pools":[{"start":"10.78.0.100","end":"10.78.0.199"}],"leaseTime":"1h","bootServer":"10.78.0.1","interfaces":["kfh2512"]}		1	1796626964208859051	1796626964208859051	{}
Machine	web-1	{"role":"web"}	{"profile":"base","interfaces":[{"mac":"52:54:00:77:00:01","ip":"10.78.0.21","hostname":"web-1"}]}	{"state":"new"}	1	1796626964210462725	1796626964210462725	{}
Machine	web-2	{"role":"web"}	{"profile":"base","interfaces":[{"mac":"52:54:00:77:00:02"}]}	{"state":"new"}	1	1796626964214760178	1796626964214760178	{}
JoinToken	jt-1	{}	{"profile":"base","maxUses":3}		1	1796626964220202649	1796626964220202649	{}
Secret	db-password	{}	{"machines":["web-1"]}	{"version":1}	2	1796626964196096874	1796626964327706327	{}
Lease	10.78.0.100	{}	{"ip":"10.78.0.100","mac":"52:54:00:77:00:02","subnet":"lab","hostname":"web-2","state":"bound","expiresAt":"2026-12-07T08:02:44.362073278Z"}		1	1796626964362616863	1796626964362616863	{}
\.


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.schema_migrations (version, name, applied_at) FROM stdin;
1	init	1796626963991006894
2	secrets	1796626964021574063
3	keys_version	1796626964027000423
4	watch	1796626964083023558
5	annotations	1796626964090970174
\.


--
-- Data for Name: secret_handles; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.secret_handles (id_hash, secret, version, machine, channel, expires_at, used_at, created_at) FROM stdin;
\.


--
-- Data for Name: secret_kek; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.secret_kek (id, kek_id, updated_at) FROM stdin;
1	2b2d7d9767d1c056	1796626964117394787
\.


--
-- Data for Name: secret_versions; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.secret_versions (name, version, kek_id, wrapped_dek, nonce, ciphertext, created_at, created_by) FROM stdin;
db-password	1	2b2d7d9767d1c056	\\xb39879b192f4c8b2266b11f9b9d03fc31bcaa73d8d0fcc3262c9626b394121c33f3eecaae7c004389159b94ee0d917b870461e04af941fe04f874efb	\\x3c5dd7af3c094e5868394f79	\\x86b437911ab55a4ec4a407aa409d17f7ff83ef726feeec7757099208ba3d7bd55d4e1f	1796626964284851908	token:a5dfcf930b2f
\.


--
-- Data for Name: webhook_cursors; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.webhook_cursors (name, seq, owner, lease_until, updated_at) FROM stdin;
\.


--
-- Data for Name: webhook_deliveries; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.webhook_deliveries (id, webhook, seq, type, state, attempts, last_status, last_error, "time") FROM stdin;
\.


--
-- Name: changes_seq_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.changes_seq_seq', 8, true);


--
-- Name: events_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.events_id_seq', 4, true);


--
-- Name: webhook_deliveries_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.webhook_deliveries_id_seq', 1, false);


--
-- Name: api_tokens api_tokens_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_tokens
    ADD CONSTRAINT api_tokens_pkey PRIMARY KEY (id);


--
-- Name: audit audit_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit
    ADD CONSTRAINT audit_pkey PRIMARY KEY (seq);


--
-- Name: changes changes_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.changes
    ADD CONSTRAINT changes_pkey PRIMARY KEY (seq);


--
-- Name: events events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (id);


--
-- Name: meta meta_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.meta
    ADD CONSTRAINT meta_pkey PRIMARY KEY (id);


--
-- Name: object_keys object_keys_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.object_keys
    ADD CONSTRAINT object_keys_pkey PRIMARY KEY (kind, key);


--
-- Name: objects objects_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.objects
    ADD CONSTRAINT objects_pkey PRIMARY KEY (kind, name);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);


--
-- Name: secret_handles secret_handles_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.secret_handles
    ADD CONSTRAINT secret_handles_pkey PRIMARY KEY (id_hash);


--
-- Name: secret_kek secret_kek_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.secret_kek
    ADD CONSTRAINT secret_kek_pkey PRIMARY KEY (id);


--
-- Name: secret_versions secret_versions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.secret_versions
    ADD CONSTRAINT secret_versions_pkey PRIMARY KEY (name, version);


--
-- Name: webhook_cursors webhook_cursors_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_cursors
    ADD CONSTRAINT webhook_cursors_pkey PRIMARY KEY (name);


--
-- Name: webhook_deliveries webhook_deliveries_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (id);


--
-- Name: audit_object; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX audit_object ON public.audit USING btree (kind, name, seq);


--
-- Name: changes_kind; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX changes_kind ON public.changes USING btree (kind, seq);


--
-- Name: events_machine; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_machine ON public.events USING btree (machine, id);


--
-- Name: object_keys_owner; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX object_keys_owner ON public.object_keys USING btree (kind, name);


--
-- Name: secret_handles_expiry; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX secret_handles_expiry ON public.secret_handles USING btree (expires_at);


--
-- Name: secret_handles_secret; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX secret_handles_secret ON public.secret_handles USING btree (secret);


--
-- Name: secret_versions_kek; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX secret_versions_kek ON public.secret_versions USING btree (kek_id);


--
-- Name: webhook_deliveries_webhook; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_deliveries_webhook ON public.webhook_deliveries USING btree (webhook, id);


--
-- Name: objects objects_changed; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER objects_changed AFTER INSERT OR DELETE OR UPDATE ON public.objects FOR EACH ROW EXECUTE FUNCTION public.kiln_object_changed();


--
-- Name: object_keys object_keys_kind_name_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.object_keys
    ADD CONSTRAINT object_keys_kind_name_fkey FOREIGN KEY (kind, name) REFERENCES public.objects(kind, name) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--

\unrestrict 8PgH9hvchMtHNutNX9kdfmKVnLTdvbIGWq16AtuvvMoVfMWSrFl4i3RMpKMk40y

