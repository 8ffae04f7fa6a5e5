--
-- PostgreSQL database dump
--

\restrict TnwuSndQNpgte20L0YGN9OFFkC6GP0B9TfleTANpuFoIhv954M1wwfVIhBGSGNe

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
    updated_at bigint NOT NULL
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
-- Data for Name: api_tokens; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.api_tokens (id, name, role, hash, created_at, revoked_at) FROM stdin;
ed75be9836f1	bootstrap-admin	admin	d474e4a699f217fefc22a503e723b1f698ce0890d9e7e77ffad269066f963003	1796623269720020609	\N
6ba1756e9f55	ci	viewer	ab43b005460b928928624dd348f0535440873fd646dde510ac4a5caaa0167411	1796623269953451240	\N
\.


--
-- Data for Name: audit; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.audit (seq, "time", actor, action, kind, name, summary, prev_hash, hash) FROM stdin;
1	1796623269720548264	system	create	APIToken	ed75be9836f1	created: role admin, name "bootstrap-admin" (first start)	0000000000000000000000000000000000000000000000000000000000000000	4c582a011bd8a0adc42e5ec56519b23df8ed7869de68806869a8faf5b5322034
2	1796623269732144734	system	create	EnrollAuthority	default	certificate authority created (ECDSA P-256), fingerprint 42c7371f7658a9a42d6ba789e5e225569212ed886abadaa9ee7aad381c113900; token signing key created (ed25519)	4c582a011bd8a0adc42e5ec56519b23df8ed7869de68806869a8faf5b5322034	d3b96857dd0e8a54e31b77643453d70c250b5222e2917c95763b2b6c67f2a506
3	1796623269833388525	token:ed75be9836f1	create	Secret	db-password	created: spec.machines	d3b96857dd0e8a54e31b77643453d70c250b5222e2917c95763b2b6c67f2a506	4f352fcbf71187e18d56a609182e610de3268fcbad072e571474cf8b2b26de37
4	1796623269835681827	token:ed75be9836f1	create	Profile	base	created: spec.boot	4f352fcbf71187e18d56a609182e610de3268fcbad072e571474cf8b2b26de37	e2a00eed915df8c5135635e800c9b4030b3af7e4ab318dab4e67c1e8a3f6ccb0
5	1796623269839607756	token:ed75be9836f1	create	Subnet	lab	created: spec.bootServer, spec.cidr, spec.interfaces, spec.leaseTime, spec.mode, spec.pools	e2a00eed915df8c5135635e800c9b4030b3af7e4ab318dab4e67c1e8a3f6ccb0	436195374bdbbc695ecf2ffaa0ab3c079719bcc55cda0907eee4f053da23ddb8
6	1796623269844540886	token:ed75be9836f1	create	Machine	web-1	created: metadata.labels.role, spec.interfaces, spec.profile	436195374bdbbc695ecf2ffaa0ab3c079719bcc55cda0907eee4f053da23ddb8	8dc28105389bc4312ec12c4e693eb9ac11f6d3391e75ff3439bef8b1aac4c51d
7	1796623269852768597	token:ed75be9836f1	create	Machine	web-2	created: metadata.labels.role, spec.interfaces, spec.profile	8dc28105389bc4312ec12c4e693eb9ac11f6d3391e75ff3439bef8b1aac4c51d	c7d863e9e638f019778a6205bc7f2741c51f39fd1579674e3e4fa42bb9b53833
8	1796623269860514038	token:ed75be9836f1	create	JoinToken	jt-1	created: spec.maxUses, spec.profile	c7d863e9e638f019778a6205bc7f2741c51f39fd1579674e3e4fa42bb9b53833	a7977b3b8fb9322187a07710677c197cec5b542c896126ef411d432acd7ff917
9	1796623269965107152	token:ed75be9836f1	create	APIToken	6ba1756e9f55	created: role viewer, name "ci"	a7977b3b8fb9322187a07710677c197cec5b542c896126ef411d432acd7ff917	0c05f110c03c72e00f9d4b8fe636a2b3b7ab2ffdf82fa888f26b7a993dd4ad1e
10	1796623270071042482	token:ed75be9836f1	set-value	Secret	db-password	stored version 1, encrypted (data key wrapped by key-encryption key 2b2d7d9767d1c056)	0c05f110c03c72e00f9d4b8fe636a2b3b7ab2ffdf82fa888f26b7a993dd4ad1e	4abc1256ee345b09da84e183a4d6c2d7ea2a6f2073849c2ff1b07ab112ea2b5d
\.


--
-- Data for Name: events; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.events (id, machine, "time", type, message) FROM stdin;
1	web-1	1796623269844540886	InventoryCreate	created: metadata.labels.role, spec.interfaces, spec.profile by token:ed75be9836f1
2	web-2	1796623269852768597	InventoryCreate	created: metadata.labels.role, spec.interfaces, spec.profile by token:ed75be9836f1
3	web-2	1796623270118885584	DHCPOffer	offered 10.78.0.100 on subnet lab
4	web-2	1796623270145715144	DHCPAck	leased 10.78.0.100 on subnet lab for 1h0m0s (selecting)
\.


--
-- Data for Name: meta; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.meta (id, audit_seq, audit_hash) FROM stdin;
1	10	4abc1256ee345b09da84e183a4d6c2d7ea2a6f2073849c2ff1b07ab112ea2b5d
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

COPY public.objects (kind, name, labels, spec, status, resource_version, created_at, updated_at) FROM stdin;
EnrollAuthority	default	{}	{"certificate":"-----BEGIN CERTIFICATE-----\\nMIIBljCCAT2gAwIBAgIQRSsK6Us/DdRGuq6fMOtDRjAKBggqhkjOPQQDAjAqMQ0w\\nCwYDVQQKEwRLaWxuMRkwFwYDVQQDExBLaWxuIENBIDUwY2NjNmY2MB4XDTI2MTIw\\nNzA1MDEwOVoXDTM2MTIwNzA2MDEwOVowKjENMAsGA1UEChMES2lsbjEZMBcGA1UE\\nAxMQS2lsbiBDQSA1MGNjYzZmNjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABJ6M\\n4DfMyrUiJ66blKMPVVD+jx9PHEnKS5KLi8BAJcK/EuxqCGr5biz7UZYdbCHMZAeM\\nKLObdJ6rAdJ/5IAvCDyjRTBDMA4GA1UdDwEB/wQEAwIBhjASBgNVHRMBAf8ECDAG\\nAQH/AgEAMB0GA1UdDgQWBBTQIXZftcK0uj4QrUU6Z5Ult09yyzAKBggqhkjOPQQD\\nAgNHADBEAiBQ6rTCYc47IaZNdNeBuTc2x2A3wcfaOyOq0vQBjyJwdQIgZ/bHEgmS\\nU7ot1XzHXMUHgn5Y2UBjT9qOOF4IjvAfYNs=\\n-----END CERTIFICATE-----\\n","key":"kiln-seal-v1:dptfRd4wi5XRe9zlD3QdxZsfQ/xGbm+6x/2c+qUOYmQxyutE2njmc7yKV7o67+kmJ/xN4+2ryegT1IQ7N1TlwWcFH7QXZFtyLJgNJ4x4duu+zvwr1Zn7yZsaCU/2CaAZtbJAb9XRAmetXZp548DoiyvhNghdUvielWKFNL0BAe1cQsYVk67k3dpGca3E9r47+2o2EeyU0YTciZRMd84238/n8vrRrQ==","tokenKey":"kiln-seal-v1:8Wz30lcGzNegmnHZTt/3YIhPSIKtMZrGw30uM2uURqcZC08cN1vDgTj8rpDrTC/HbUcTnGBK/B4jyVw9MyUKDiEv7+BckhDFJMpJVQ==","kekId":"2b2d7d9767d1c056"}		1	1796623269747864213	1796623269747864213
Profile	base	{}	{"boot":{"agent":true}}		1	1796623269835388008	1796623269835388008
Subnet	lab	{}	{"cidr":"10.78.0.0/24","mode":"full","pools":[{"start":"10.78.0.100","end":"10.78.0.199"}],"leaseTime":"1h","bootServer":"10.78.0.1","interfaces":["kfh526"]}		1	1796623269837678084	1796623269837678084
Machine	web-1	{"role":"web"}	{"profile":"base","interfaces":[{"mac":"52:54:00:77:00:01","ip":"10.78.0.21","hostname":"web-1"}]}	{"state":"new"}	1	1796623269842167716	1796623269842167716
Machine	web-2	{"role":"web"}	{"profile":"base","interfaces":[{"mac":"52:54:00:77:00:02"}]}	{"state":"new"}	1	1796623269852024298	1796623269852024298
JoinToken	jt-1	{}	{"profile":"base","maxUses":3}		1	1796623269859084098	1796623269859084098
Secret	db-password	{}	{"machines":["web-1"]}	{"version":1}	2	1796623269833188151	1796623270064989821
Lease	10.78.0.100	{}	{"ip":"10.78.0.100","mac":"52:54:00:77:00:02","subnet":"lab","hostname":"web-2","state":"bound","expiresAt":"2026-12-07T07:01:10.119271735Z"}		1	1796623270139392530	1796623270139392530
\.


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.schema_migrations (version, name, applied_at) FROM stdin;
1	init	1796623269706297949
2	secrets	1796623269718220488
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
1	2b2d7d9767d1c056	1796623269726807009
\.


--
-- Data for Name: secret_versions; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.secret_versions (name, version, kek_id, wrapped_dek, nonce, ciphertext, created_at, created_by) FROM stdin;
db-password	1	2b2d7d9767d1c056	\\x6ef44fd1e4a2296084571c0c397ce7640d80e83b1930414e1addfb566806ddf9f72580bf40257ae9ff51ea5edb662e76b6b8a5aa5a0366706f24e6b4	\\x84b8dda5be3aeddb17226890	\\x911c03b566f263bdbf42e8bf2341855c7c6216cf14cd4b07a9100efc87a7a96ecdebdf	1796623270030822872	token:ed75be9836f1
\.


--
-- Name: events_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.events_id_seq', 4, true);


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
-- Name: audit_object; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX audit_object ON public.audit USING btree (kind, name, seq);


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
-- Name: object_keys object_keys_kind_name_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.object_keys
    ADD CONSTRAINT object_keys_kind_name_fkey FOREIGN KEY (kind, name) REFERENCES public.objects(kind, name) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--

\unrestrict TnwuSndQNpgte20L0YGN9OFFkC6GP0B9TfleTANpuFoIhv954M1wwfVIhBGSGNe

