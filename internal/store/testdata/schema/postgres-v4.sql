--
-- PostgreSQL database dump
--

\restrict ooVEvW5P3MAwkUskjZZa5yB6ThKUq5HIt4gytUaPXbfrYz6tNtwbwKrbX2Q0Jjz

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
		INSERT INTO changes (kind, name, type, labels, spec, status, resource_version, created_at, updated_at)
		VALUES (OLD.kind, OLD.name, 'DELETED', OLD.labels, OLD.spec, OLD.status, OLD.resource_version, OLD.created_at, OLD.updated_at);
		RETURN OLD;
	END IF;
	INSERT INTO changes (kind, name, type, labels, spec, status, resource_version, created_at, updated_at)
	VALUES (NEW.kind, NEW.name, CASE TG_OP WHEN 'INSERT' THEN 'ADDED' ELSE 'MODIFIED' END,
		NEW.labels, NEW.spec, NEW.status, NEW.resource_version, NEW.created_at, NEW.updated_at);
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
    updated_at bigint NOT NULL
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
be6ff68f3195	bootstrap-admin	admin	6cd4451545cd6b51fdc550cd368708ee1d918fa7d3ddf46862bd5e69555eb2d0	1796626722932231833	\N
cc4c8d77b671	ci	viewer	6dca91a16e6a5caf135d22e3326b3e175377f26fdcdb2d04c03c965c232e31db	1796626723064118671	\N
\.


--
-- Data for Name: audit; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.audit (seq, "time", actor, action, kind, name, summary, prev_hash, hash) FROM stdin;
1	1796626722929234927	system	chain-keyed	AuditChain	chain	audit chain keyed (HMAC-SHA256) from this entry on	0000000000000000000000000000000000000000000000000000000000000000	3ad339d3a601cba0c125d60b0ba5db819e70c19cf9c62793338b79c74b76829f
2	1796626722935493362	system	create	APIToken	be6ff68f3195	created: role admin, name "bootstrap-admin" (first start)	3ad339d3a601cba0c125d60b0ba5db819e70c19cf9c62793338b79c74b76829f	458eca274db70866f53ca3352cd47f5b6ef9b1ab7da92422b8ad2605583ef211
3	1796626722954416131	system	create	EnrollAuthority	default	certificate authority created (ECDSA P-256), fingerprint 405cd700022ae48299217872b98a14f3cddb485997468c2a8e1ed23799493c16; token signing key created (ed25519)	458eca274db70866f53ca3352cd47f5b6ef9b1ab7da92422b8ad2605583ef211	12fa446773dfd318fdbdec4548c23d3d5107eeca911e30e75097c42469c2e0fb
4	1796626723028686440	token:be6ff68f3195	create	Secret	db-password	created: spec.machines	12fa446773dfd318fdbdec4548c23d3d5107eeca911e30e75097c42469c2e0fb	66203e2e2a8dc5bac35bfce7256d8862b1dbcdef11cab1d920fab67487872385
5	1796626723030633455	token:be6ff68f3195	create	Profile	base	created: spec.boot	66203e2e2a8dc5bac35bfce7256d8862b1dbcdef11cab1d920fab67487872385	bfbb2b537d7bf6a0b8d51b7f6fb51adcc98c9e942b052fc2b55300e4602a9578
6	1796626723032533102	token:be6ff68f3195	create	Subnet	lab	created: spec.bootServer, spec.cidr, spec.interfaces, spec.leaseTime, spec.mode, spec.pools	bfbb2b537d7bf6a0b8d51b7f6fb51adcc98c9e942b052fc2b55300e4602a9578	c38ec3df0d4a30be38af06539c235163449a634b85660f91732013d010255cd8
7	1796626723034617042	token:be6ff68f3195	create	Machine	web-1	created: metadata.labels.role, spec.interfaces, spec.profile	c38ec3df0d4a30be38af06539c235163449a634b85660f91732013d010255cd8	9d1596384ee96c005e95181ae99f2c087245b1e83eff3ab7a47bd36610b78741
8	1796626723036679132	token:be6ff68f3195	create	Machine	web-2	created: metadata.labels.role, spec.interfaces, spec.profile	9d1596384ee96c005e95181ae99f2c087245b1e83eff3ab7a47bd36610b78741	f8e6424e4886d59005b81a4211491ec78b1861469ef05c1345ba6ebab3dc36f3
9	1796626723037893960	token:be6ff68f3195	create	JoinToken	jt-1	created: spec.maxUses, spec.profile	f8e6424e4886d59005b81a4211491ec78b1861469ef05c1345ba6ebab3dc36f3	a180e3f37a9568df4005976e90ae0d425fbcc72b04b51f13353d80933c518e0a
10	1796626723064751182	token:be6ff68f3195	create	APIToken	cc4c8d77b671	created: role viewer, name "ci"	a180e3f37a9568df4005976e90ae0d425fbcc72b04b51f13353d80933c518e0a	c407a492ad44019e7b90ec69c2bc67d504d132c548831188734cb846c8058330
11	1796626723094311962	token:be6ff68f3195	set-value	Secret	db-password	stored version 1, encrypted (data key wrapped by key-encryption key 2b2d7d9767d1c056)	c407a492ad44019e7b90ec69c2bc67d504d132c548831188734cb846c8058330	d1b0d824e39a8d02520f4983cc096c8125e10f18ba2ed374e53dc4e341087d57
\.


--
-- Data for Name: changes; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.changes (seq, kind, name, type, labels, spec, status, resource_version, created_at, updated_at) FROM stdin;
1	EnrollAuthority	default	ADDED	{}	{"certificate":"-----BEGIN CERTIFICATE-----\\nMIIBmDCCAT2gAwIBAgIQW44/s1NndBDOGmt35Uz46jAKBggqhkjOPQQDAjAqMQ0w\\nCwYDVQQKEwRLaWxuMRkwFwYDVQQDExBLaWxuIENBIDNjNzhjZjFmMB4XDTI2MTIw\\nNzA1NTg0MloXDTM2MTIwNzA2NTg0MlowKjENMAsGA1UEChMES2lsbjEZMBcGA1UE\\nAxMQS2lsbiBDQSAzYzc4Y2YxZjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABJq8\\n5zxmVVsyA5P68uNOYiwot5ANsyTGrFUTknoeODra9+lsOH2H+iC4ivFlgVvIZ1hA\\nqVi04F22on9M9OnZtnCjRTBDMA4GA1UdDwEB/wQEAwIBhjASBgNVHRMBAf8ECDAG\\nAQH/AgEAMB0GA1UdDgQWBBSP4wK5r+BJurMXGO64WvSRLpLaLTAKBggqhkjOPQQD\\nAgNJADBGAiEAly66pupnEanrI9Jy46nBQlB+mTWAfVeDj7piDQx4poICIQCjtN17\\n6SdlwC8pXRYv2455VrsffkTruE1GQvj6U/BliA==\\n-----END CERTIFICATE-----\\n","key":"kiln-seal-v1:wESwxtwrfCWgT3YDc4Ooa++kyfCk40T8+icEz5NxPQuxPw54PhGHU4qTIvkmfrjN+CLxNnnTNfUDT1p/lBLljh45KHMO4Bcf25PyMlOysIx4kFYpA/DFywO5ZnSzE5OanS5NIE8awbjSSGblFSd1EGv5LVCC2Te4vo1WSpAB2Im33I5lqw58b3CsJmlBvEvl4Gtcp30pMixnMTq47IOvEDQ9VR8t2Q==","tokenKey":"kiln-seal-v1:UefPP+LRMm4WJHoyc8AOcmxMAtHFKnwEk38fyBeIUL3YgSBotgOBMLfXlLM81pL0vuQgl2N0jrsQd6O+HN2lwuEOWOz4mtJABWEcMw==","kekId":"2b2d7d9767d1c056"}		1	1796626722956657665	1796626722956657665
2	Secret	db-password	ADDED	{}	{"machines":["web-1"]}		1	1796626723026531396	1796626723026531396
3	Profile	base	ADDED	{}	{"boot":{"agent":true}}		1	1796626723030225484	1796626723030225484
4	Subnet	lab	ADDED	{}	{"cidr":"10.78.0.0/24","mode":"full","pools":[{"start":"10.78.0.100","end":"10.78.0.199"}],"leaseTime":"1h","bootServer":"10.78.0.1","interfaces":["kfh2886"]}		1	1796626723032205861	1796626723032205861
5	Machine	web-1	ADDED	{"role":"web"}	{"profile":"base","interfaces":[{"mac":"52:54:00:77:00:01","ip":"10.78.0.21","hostname":"web-1"}]}	{"state":"new"}	1	1796626723033252064	1796626723033252064
6	Machine	web-2	ADDED	{"role":"web"}	{"profile":"base","interfaces":[{"mac":"52:54:00:77:00:02"}]}	{"state":"new"}	1	1796626723036224403	1796626723036224403
7	JoinToken	jt-1	ADDED	{}	{"profile":"base","maxUses":3}		1	1796626723037601144	1796626723037601144
8	Secret	db-password	MODIFIED	{}	{"machines":["web-1"]}	{"version":1}	2	1796626723026531396	1796626723093794335
\.


--
-- Data for Name: events; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.events (id, machine, "time", type, message) FROM stdin;
1	web-1	1796626723034617042	InventoryCreate	created: metadata.labels.role, spec.interfaces, spec.profile by token:be6ff68f3195
2	web-2	1796626723036679132	InventoryCreate	created: metadata.labels.role, spec.interfaces, spec.profile by token:be6ff68f3195
3	web-2	1796626723128177055	DHCPOffer	offered 10.78.0.100 on subnet lab
4	web-2	1796626723131514345	DHCPAck	leased 10.78.0.100 on subnet lab for 1h0m0s (selecting)
\.


--
-- Data for Name: meta; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.meta (id, audit_seq, audit_hash, keys_version, events_floor, changes_floor) FROM stdin;
1	11	d1b0d824e39a8d02520f4983cc096c8125e10f18ba2ed374e53dc4e341087d57	1	0	0
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
EnrollAuthority	default	{}	{"certificate":"-----BEGIN CERTIFICATE-----\\nMIIBmDCCAT2gAwIBAgIQW44/s1NndBDOGmt35Uz46jAKBggqhkjOPQQDAjAqMQ0w\\nCwYDVQQKEwRLaWxuMRkwFwYDVQQDExBLaWxuIENBIDNjNzhjZjFmMB4XDTI2MTIw\\nNzA1NTg0MloXDTM2MTIwNzA2NTg0MlowKjENMAsGA1UEChMES2lsbjEZMBcGA1UE\\nAxMQS2lsbiBDQSAzYzc4Y2YxZjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABJq8\\n5zxmVVsyA5P68uNOYiwot5ANsyTGrFUTknoeODra9+lsOH2H+iC4ivFlgVvIZ1hA\\nqVi04F22on9M9OnZtnCjRTBDMA4GA1UdDwEB/wQEAwIBhjASBgNVHRMBAf8ECDAG\\nAQH/AgEAMB0GA1UdDgQWBBSP4wK5r+BJurMXGO64WvSRLpLaLTAKBggqhkjOPQQD\\nAgNJADBGAiEAly66pupnEanrI9Jy46nBQlB+mTWAfVeDj7piDQx4poICIQCjtN17\\n6SdlwC8pXRYv2455VrsffkTruE1GQvj6U/BliA==\\n-----END CERTIFICATE-----\\n","key":"kiln-seal-v1:wESwxtwrfCWgT3YDc4Ooa++kyfCk40T8+icEz5NxPQuxPw54PhGHU4qTIvkmfrjN+CLxNnnTNfUDT1p/lBLljh45KHMO4Bcf25PyMlOysIx4kFYpA/DFywO5ZnSzE5OanS5NIE8awbjSSGblFSd1EGv5LVCC2Te4vo1WSpAB2Im33I5lqw58b3CsJmlBvEvl4Gtcp30pMixnMTq47IOvEDQ9VR8t2Q==","tokenKey":"kiln-seal-v1:UefPP+LRMm4WJHoyc8AOcmxMAtHFKnwEk38fyBeIUL3YgSBotgOBMLfXlLM81pL0vuQgl2N0jrsQd6O+HN2lwuEOWOz4mtJABWEcMw==","kekId":"2b2d7d9767d1c056"}		1	1796626722956657665	1796626722956657665
Profile	base	{}	{"boot":{"agent":true}}		1	1796626723030225484	1796626723030225484
Subnet	lab	{}	{"cidr":"10.78.0.0/24","mode":"full","pools":[{"start":"10.78.0.100","end":"10.78.0.199"}],"leaseTime":"1h","bootServer":"10.78.0.1","interfaces":["kfh2886"]}		1	1796626723032205861	1796626723032205861
Machine	web-1	{"role":"web"}	{"profile":"base","interfaces":[{"mac":"52:54:00:77:00:01","ip":"10.78.0.21","hostname":"web-1"}]}	{"state":"new"}	1	1796626723033252064	1796626723033252064
Machine	web-2	{"role":"web"}	{"profile":"base","interfaces":[{"mac":"52:54:00:77:00:02"}]}	{"state":"new"}	1	1796626723036224403	1796626723036224403
JoinToken	jt-1	{}	{"profile":"base","maxUses":3}		1	1796626723037601144	1796626723037601144
Secret	db-password	{}	{"machines":["web-1"]}	{"version":1}	2	1796626723026531396	1796626723093794335
Lease	10.78.0.100	{}	{"ip":"10.78.0.100","mac":"52:54:00:77:00:02","subnet":"lab","hostname":"web-2","state":"bound","expiresAt":"2026-12-07T07:58:43.128647653Z"}		1	1796626723129244498	1796626723129244498
\.


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.schema_migrations (version, name, applied_at) FROM stdin;
1	init	1796626722853951745
2	secrets	1796626722886683785
3	keys_version	1796626722887447210
4	watch	1796626722918841513
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
1	2b2d7d9767d1c056	1796626722940877815
\.


--
-- Data for Name: secret_versions; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.secret_versions (name, version, kek_id, wrapped_dek, nonce, ciphertext, created_at, created_by) FROM stdin;
db-password	1	2b2d7d9767d1c056	\\x450e5b99fe3e5be62ef5fa51924c8a65c32176759f3a7aeccab233d2fc67fbb591d75253e6eca0f0a90be74e7b31e4af98e0b84c2547e305670c58ea	\\x1c00ff5a81c3c0249b0bae6b	\\x7172da61830a687fb3ed8f43926c61021bf567f364da1cfa7c2fc80f00fa3d6109befa	1796626723092398099	token:be6ff68f3195
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

\unrestrict ooVEvW5P3MAwkUskjZZa5yB6ThKUq5HIt4gytUaPXbfrYz6tNtwbwKrbX2Q0Jjz

