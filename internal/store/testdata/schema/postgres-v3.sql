--
-- PostgreSQL database dump
--

\restrict uqkzM6RLRRM0MzfgqVgPB25ApDXraAAG4kDa2ldOas5s3egzKquU7Ldb7rPUa8N

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
    keys_version bigint DEFAULT 0 NOT NULL,
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
125b8d1fff13	bootstrap-admin	admin	097f1c87a645c08f759e005fe81831580282cf63fe05c0c6c8c843da51aac0a9	1796623285903234996	\N
932c417fec43	ci	viewer	37a15eff9c99f57c370f69639c96eba3f2c8626f8d4ff6a8a2dc3bec864ee88a	1796623286119521700	\N
\.


--
-- Data for Name: audit; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.audit (seq, "time", actor, action, kind, name, summary, prev_hash, hash) FROM stdin;
1	1796623285900604464	system	chain-keyed	AuditChain	chain	audit chain keyed (HMAC-SHA256) from this entry on	0000000000000000000000000000000000000000000000000000000000000000	eae4408285a9af1915461940acd0c564ee39189a82581276d70f128119215775
2	1796623285907733384	system	create	APIToken	125b8d1fff13	created: role admin, name "bootstrap-admin" (first start)	eae4408285a9af1915461940acd0c564ee39189a82581276d70f128119215775	203eb719ee5ff646c480b97543311ae7ad749ac5e16a2a1334f230f9b1cad55c
3	1796623285920798957	system	create	EnrollAuthority	default	certificate authority created (ECDSA P-256), fingerprint 22279554e1e276292d90baffa415f5dc07b6db6b179c48c688354bb33c0dcb40; token signing key created (ed25519)	203eb719ee5ff646c480b97543311ae7ad749ac5e16a2a1334f230f9b1cad55c	ed6772dd73838bf3bfa8bcc202774a04ac86dcc8672fd8b21c5efdc60213183c
4	1796623286071758629	token:125b8d1fff13	create	Secret	db-password	created: spec.machines	ed6772dd73838bf3bfa8bcc202774a04ac86dcc8672fd8b21c5efdc60213183c	e23ad659718993b078fe9fde19ada8db003bdffd4a6340d61cae1f502af24695
5	1796623286081556581	token:125b8d1fff13	create	Profile	base	created: spec.boot	e23ad659718993b078fe9fde19ada8db003bdffd4a6340d61cae1f502af24695	dd4d55fa4cf50d1793ffba12347349f4a4dcd2f363d11cadcb55ffa541bb348f
6	1796623286082408732	token:125b8d1fff13	create	Subnet	lab	created: spec.bootServer, spec.cidr, spec.interfaces, spec.leaseTime, spec.mode, spec.pools	dd4d55fa4cf50d1793ffba12347349f4a4dcd2f363d11cadcb55ffa541bb348f	c6fc329be36e168fee5b7ef3c13d34320ad63c1e740ab84491c47997442c7b37
7	1796623286084609311	token:125b8d1fff13	create	Machine	web-1	created: metadata.labels.role, spec.interfaces, spec.profile	c6fc329be36e168fee5b7ef3c13d34320ad63c1e740ab84491c47997442c7b37	366a7bd8c81ed8d40d941a51c962e0920d1ea825cc53006fb31dba9859f50328
8	1796623286086453384	token:125b8d1fff13	create	Machine	web-2	created: metadata.labels.role, spec.interfaces, spec.profile	366a7bd8c81ed8d40d941a51c962e0920d1ea825cc53006fb31dba9859f50328	6d9a310d79d91f1db70f9be4ab7cfbe13a3ae857720947c6ebda549eb7f5e1d5
9	1796623286087472256	token:125b8d1fff13	create	JoinToken	jt-1	created: spec.maxUses, spec.profile	6d9a310d79d91f1db70f9be4ab7cfbe13a3ae857720947c6ebda549eb7f5e1d5	2a10b8834a36152675c3033f4933ee8b1b2421b272faa66fe1a7783647228ca6
10	1796623286135281563	token:125b8d1fff13	create	APIToken	932c417fec43	created: role viewer, name "ci"	2a10b8834a36152675c3033f4933ee8b1b2421b272faa66fe1a7783647228ca6	86233f1144798bcb679295d35fa2c4eb0ff1b19d6ca79c6f231ed8eafa83c5ea
11	1796623286228512155	token:125b8d1fff13	set-value	Secret	db-password	stored version 1, encrypted (data key wrapped by key-encryption key 2b2d7d9767d1c056)	86233f1144798bcb679295d35fa2c4eb0ff1b19d6ca79c6f231ed8eafa83c5ea	f9518bfa013c9f173b78541ec4ab0ced317eb26c47cb927b2b1aaed12333b2b5
\.


--
-- Data for Name: events; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.events (id, machine, "time", type, message) FROM stdin;
1	web-1	1796623286084609311	InventoryCreate	created: metadata.labels.role, spec.interfaces, spec.profile by token:125b8d1fff13
2	web-2	1796623286086453384	InventoryCreate	created: metadata.labels.role, spec.interfaces, spec.profile by token:125b8d1fff13
3	web-2	1796623286254594989	DHCPOffer	offered 10.78.0.100 on subnet lab
4	web-2	1796623286256194385	DHCPAck	leased 10.78.0.100 on subnet lab for 1h0m0s (selecting)
\.


--
-- Data for Name: meta; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.meta (id, audit_seq, audit_hash, keys_version) FROM stdin;
1	11	f9518bfa013c9f173b78541ec4ab0ced317eb26c47cb927b2b1aaed12333b2b5	1
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
EnrollAuthority	default	{}	{"certificate":"-----BEGIN CERTIFICATE-----\\nMIIBljCCAT2gAwIBAgIQeejQml4A4lDsHEldQ0d2VDAKBggqhkjOPQQDAjAqMQ0w\\nCwYDVQQKEwRLaWxuMRkwFwYDVQQDExBLaWxuIENBIDc4Nzc5YWZkMB4XDTI2MTIw\\nNzA1MDEyNVoXDTM2MTIwNzA2MDEyNVowKjENMAsGA1UEChMES2lsbjEZMBcGA1UE\\nAxMQS2lsbiBDQSA3ODc3OWFmZDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNme\\nErSVwc7wMJEu5QgYRNfva6dC3Kda4heiQlnToOp6EkDohlcHyzEnMVDVxup6HC+U\\nQXg3jjMi7Uo90V6yblmjRTBDMA4GA1UdDwEB/wQEAwIBhjASBgNVHRMBAf8ECDAG\\nAQH/AgEAMB0GA1UdDgQWBBTyTx8dWGfMhKe/TL39bTGgT0nK4zAKBggqhkjOPQQD\\nAgNHADBEAiAKeO0FLj7CRXUhANYkozdtdVg8sUc57ywuNfbsvjOblAIgVjb3ma5k\\nR/f5algxACuBOyZSbDBulsFIy7d68iQgMBM=\\n-----END CERTIFICATE-----\\n","key":"kiln-seal-v1:xDB+PInKs+13LJM1a6pf5VLWCwD+OtC/gsb3jI4SGer51T/thGY2zol6opJTZQLYDS4mBjyZt+5pj2W3B/RE7mVDFCRonD+5pey286hyNnIOoTWKsd8OmzhOKsWExeSxlbjK90HR/bSq5EPIc/ABwEQgwfcXRzKRbSsdSY8Gccl8Rv3TCJTHqbMR/p5i/IVnfRO+LVXZwgzF9CSZjAZzrQoQBPOHRg==","tokenKey":"kiln-seal-v1:vpYOWMf4kxiiPtJzLHYc7Hmvh5LvOiwjEmnKtTQ3Gsh2ZGUUOdwT4/oPfMg+fKiHts1X3lV2iWkWPALVOfBucrNevgURr067htIzOA==","kekId":"2b2d7d9767d1c056"}		1	1796623285924992797	1796623285924992797
Profile	base	{}	{"boot":{"agent":true}}		1	1796623286081372528	1796623286081372528
Subnet	lab	{}	{"cidr":"10.78.0.0/24","mode":"full","pools":[{"start":"10.78.0.100","end":"10.78.0.199"}],"leaseTime":"1h","bootServer":"10.78.0.1","interfaces":["kfh526"]}		1	1796623286082193150	1796623286082193150
Machine	web-1	{"role":"web"}	{"profile":"base","interfaces":[{"mac":"52:54:00:77:00:01","ip":"10.78.0.21","hostname":"web-1"}]}	{"state":"new"}	1	1796623286083104822	1796623286083104822
Machine	web-2	{"role":"web"}	{"profile":"base","interfaces":[{"mac":"52:54:00:77:00:02"}]}	{"state":"new"}	1	1796623286086096938	1796623286086096938
JoinToken	jt-1	{}	{"profile":"base","maxUses":3}		1	1796623286087286900	1796623286087286900
Secret	db-password	{}	{"machines":["web-1"]}	{"version":1}	2	1796623286070459203	1796623286228051976
Lease	10.78.0.100	{}	{"ip":"10.78.0.100","mac":"52:54:00:77:00:02","subnet":"lab","hostname":"web-2","state":"bound","expiresAt":"2026-12-07T07:01:26.255051392Z"}		1	1796623286255655449	1796623286255655449
\.


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.schema_migrations (version, name, applied_at) FROM stdin;
1	init	1796623285787813014
2	secrets	1796623285890403199
3	keys_version	1796623285895099997
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
1	2b2d7d9767d1c056	1796623285911872602
\.


--
-- Data for Name: secret_versions; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.secret_versions (name, version, kek_id, wrapped_dek, nonce, ciphertext, created_at, created_by) FROM stdin;
db-password	1	2b2d7d9767d1c056	\\xb0ca33e1cc6fdd7684104fd163de17c344ba299f1a427d1297e1c7e0eb7ddd63847c9732526e51aaa4ca674379c453cfe1a30c55d4b6b681d3db8ba8	\\xc7b718f2383b0857af441fe6	\\xef3c3cf33fbc21e8105476c475b840e24ec5c944243ecd2d48dfc8a2c72526021f8e76	1796623286226201732	token:125b8d1fff13
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

\unrestrict uqkzM6RLRRM0MzfgqVgPB25ApDXraAAG4kDa2ldOas5s3egzKquU7Ldb7rPUa8N

