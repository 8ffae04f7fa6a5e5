--
-- PostgreSQL database dump
--

\restrict iFhmFCFXfmbirzsJS3AlQ0RXFmQtljAZzT4REbazGz09P8hHPlOKRVs1V75cV5X

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
31ad98c61461	ci	viewer	53a4229b4c030ad40956e10089e425a54c95ffc852b2d59f98a4cdfbe78e624e	1796621769424814113	\N
\.


--
-- Data for Name: audit; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.audit (seq, "time", actor, action, kind, name, summary, prev_hash, hash) FROM stdin;
1	1796621769420968894	test	create	Secret	db-password	created: spec.machines	0000000000000000000000000000000000000000000000000000000000000000	d55d020e70b9821f10316a38f0ec4b5165a9def89eef2448f7b287e443e06c93
2	1796621769421355176	test	create	Profile	base	created: spec.boot	d55d020e70b9821f10316a38f0ec4b5165a9def89eef2448f7b287e443e06c93	da4d2e3ac95c7b0191424820fad588ff3bc3edb117927c2c960977109a3bbc4e
3	1796621769421621022	test	create	Subnet	lab	created: spec.cidr, spec.mode, spec.pools	da4d2e3ac95c7b0191424820fad588ff3bc3edb117927c2c960977109a3bbc4e	d5afe43e2008df12c289aa898be17b891781bec1edfdf4a41bf200945e98f6a3
4	1796621769422243194	test	create	Machine	web-1	created: metadata.labels.role, spec.interfaces, spec.profile	d5afe43e2008df12c289aa898be17b891781bec1edfdf4a41bf200945e98f6a3	d95502908b5363b0a7eeb4b74688f83bc29fcc657422631932a76bcfbac6d3f9
5	1796621769424228961	test	create	Machine	web-2	created: metadata.labels.role, spec.interfaces, spec.profile	d95502908b5363b0a7eeb4b74688f83bc29fcc657422631932a76bcfbac6d3f9	a9a60b733288c7601fa5812ce7c8da1ab7f442357309d4a063d02a747cd2769a
6	1796621769424451666	test	create	JoinToken	jt-1	created: spec.maxUses, spec.profile	a9a60b733288c7601fa5812ce7c8da1ab7f442357309d4a063d02a747cd2769a	403539883810b39c80af260ad51b58f4c5932f7c1283f31d8166fabdbca8d0fc
7	1796621769425664050	test	set-value	Secret	db-password	stored version 1, encrypted (data key wrapped by key-encryption key 2b2d7d9767d1c056)	403539883810b39c80af260ad51b58f4c5932f7c1283f31d8166fabdbca8d0fc	779e4a5de8b80e8da393d4889319191dc28c61954b908132f2ab2cff19b86da7
\.


--
-- Data for Name: events; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.events (id, machine, "time", type, message) FROM stdin;
1	web-1	1796621769422243194	InventoryCreate	created: metadata.labels.role, spec.interfaces, spec.profile by test
2	web-2	1796621769424228961	InventoryCreate	created: metadata.labels.role, spec.interfaces, spec.profile by test
3	web-1	1796621769424877922	dhcp	fixture event
\.


--
-- Data for Name: meta; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.meta (id, audit_seq, audit_hash) FROM stdin;
1	7	779e4a5de8b80e8da393d4889319191dc28c61954b908132f2ab2cff19b86da7
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
Secret	db-password	{}	{"machines":["web-1"]}	{"version":1}	2	1796621769420880319	1796621769425641719
Profile	base	{}	{"boot":{"agent":true}}		1	1796621769421294793	1796621769421294793
Subnet	lab	{}	{"cidr":"10.77.0.0/24","mode":"full","pools":[{"start":"10.77.0.100","end":"10.77.0.199"}]}		1	1796621769421598500	1796621769421598500
Machine	web-1	{"role":"web"}	{"profile":"base","interfaces":[{"mac":"52:54:00:77:00:01","ip":"10.77.0.21","hostname":"web-1"}]}	{"state":"new"}	1	1796621769422141574	1796621769422141574
Machine	web-2	{"role":"web"}	{"profile":"base","interfaces":[{"mac":"52:54:00:77:00:02"}]}	{"state":"new"}	1	1796621769424173778	1796621769424173778
JoinToken	jt-1	{}	{"profile":"base","maxUses":3}		1	1796621769424414908	1796621769424414908
Lease	10.77.0.100	{}	{"ip":"10.77.0.100","mac":"52:54:00:77:00:02","subnet":"lab","hostname":"web-2","state":"bound","expiresAt":"2036-01-02T03:04:05Z"}		1	1796621769424863475	1796621769424863475
\.


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.schema_migrations (version, name, applied_at) FROM stdin;
1	init	1796621774160881109
2	secrets	1796621774234518188
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
1	2b2d7d9767d1c056	1796621769425268031
\.


--
-- Data for Name: secret_versions; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.secret_versions (name, version, kek_id, wrapped_dek, nonce, ciphertext, created_at, created_by) FROM stdin;
db-password	1	2b2d7d9767d1c056	\\xb88a49c1728ea44c27c9e53ce88bc7a29e2126836e388737372ae6e3d082b4d712c73c370d5b9d1b0f224456b1ac0d9bc47af7a4719dbdcac875b623	\\x947ef2167621e273be2184a5	\\x26bcf4c26438061efcd9e8a161d6cfaa2af381ffaec4fa68aa0cafa25e2eb0733beb85	1796621769425528507	test
\.


--
-- Name: events_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.events_id_seq', 3, true);


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

\unrestrict iFhmFCFXfmbirzsJS3AlQ0RXFmQtljAZzT4REbazGz09P8hHPlOKRVs1V75cV5X

