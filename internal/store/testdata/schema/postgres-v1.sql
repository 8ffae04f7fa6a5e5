--
-- PostgreSQL database dump
--

\restrict i9UJb8aAawvFiQY5qLHu5ST8Uj0ocqqp6b7rEOdFceEe4ad8G9gVLb3ASGT2Gge

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
-- Data for Name: api_tokens; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.api_tokens (id, name, role, hash, created_at, revoked_at) FROM stdin;
e55d035bd8a0	bootstrap-admin	admin	a46367e854465b63b67437b561832fa36477e070509ee2953b2b985bcd78534f	1796623265138658587	\N
3b3bdbd45d05	ci	viewer	a847026b0a4fff0eefdf9f40308a195be77ac0d1969817c0c09f7d173e666e1c	1796623265395582410	\N
\.


--
-- Data for Name: audit; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.audit (seq, "time", actor, action, kind, name, summary, prev_hash, hash) FROM stdin;
1	1796623265139226487	system	create	APIToken	e55d035bd8a0	created: role admin, name "bootstrap-admin" (first start)	0000000000000000000000000000000000000000000000000000000000000000	adc32dba1b270f7a1f7ffbfb32e319f74e490f516d74e627312092a8f2671258
2	1796623265304401396	token:e55d035bd8a0	create	Profile	base	created: spec.boot	adc32dba1b270f7a1f7ffbfb32e319f74e490f516d74e627312092a8f2671258	728a4e9ed486494012d8a630c8e9f35d59e7889eb0960664e225b32323b07c4b
3	1796623265308610134	token:e55d035bd8a0	create	Subnet	lab	created: spec.bootServer, spec.cidr, spec.interfaces, spec.leaseTime, spec.mode, spec.pools	728a4e9ed486494012d8a630c8e9f35d59e7889eb0960664e225b32323b07c4b	0888d5e55c2866e170704b1b4d173266454c713a77478baab6a86f66ac5b013a
4	1796623265378465653	token:e55d035bd8a0	create	Machine	web-1	created: metadata.labels.role, spec.interfaces, spec.profile	0888d5e55c2866e170704b1b4d173266454c713a77478baab6a86f66ac5b013a	4693a0f1caf785a7562cea214d5da42d52d3a193a2cae330d109277a271c76a0
5	1796623265380867437	token:e55d035bd8a0	create	Machine	web-2	created: metadata.labels.role, spec.interfaces, spec.profile	4693a0f1caf785a7562cea214d5da42d52d3a193a2cae330d109277a271c76a0	4c741b8065eea34d8d7a5a2093ffcb57811869776d88d30b638a3e6b86b1bf63
6	1796623265396103282	token:e55d035bd8a0	create	APIToken	3b3bdbd45d05	created: role viewer, name "ci"	4c741b8065eea34d8d7a5a2093ffcb57811869776d88d30b638a3e6b86b1bf63	a2f3c7a1d56eaa677751e7e137acb2a05fbac4d4f4c7e4227add0636bf4615fb
\.


--
-- Data for Name: events; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.events (id, machine, "time", type, message) FROM stdin;
1	web-1	1796623265378465653	InventoryCreate	created: metadata.labels.role, spec.interfaces, spec.profile by token:e55d035bd8a0
2	web-2	1796623265380867437	InventoryCreate	created: metadata.labels.role, spec.interfaces, spec.profile by token:e55d035bd8a0
3	web-2	1796623265489655954	DHCPOffer	offered 10.78.0.100 on subnet lab
4	web-2	1796623265527194818	DHCPAck	leased 10.78.0.100 on subnet lab for 1h0m0s (selecting)
\.


--
-- Data for Name: meta; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.meta (id, audit_seq, audit_hash) FROM stdin;
1	6	a2f3c7a1d56eaa677751e7e137acb2a05fbac4d4f4c7e4227add0636bf4615fb
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
Profile	base	{}	{"boot":{"agent":true}}		1	1796623265303861117	1796623265303861117
Subnet	lab	{}	{"cidr":"10.78.0.0/24","mode":"full","pools":[{"start":"10.78.0.100","end":"10.78.0.199"}],"leaseTime":"1h","bootServer":"10.78.0.1","interfaces":["kfh526"]}		1	1796623265308396695	1796623265308396695
Machine	web-1	{"role":"web"}	{"profile":"base","interfaces":[{"mac":"52:54:00:77:00:01","ip":"10.78.0.21","hostname":"web-1"}]}	{"state":"new"}	1	1796623265309453358	1796623265309453358
Machine	web-2	{"role":"web"}	{"profile":"base","interfaces":[{"mac":"52:54:00:77:00:02"}]}	{"state":"new"}	1	1796623265380435090	1796623265380435090
Lease	10.78.0.100	{}	{"ip":"10.78.0.100","mac":"52:54:00:77:00:02","subnet":"lab","hostname":"web-2","state":"bound","expiresAt":"2026-12-07T07:01:05.524482875Z"}		2	1796623265489184694	1796623265526607662
\.


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.schema_migrations (version, name, applied_at) FROM stdin;
1	init	1796623265121939112
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
-- Name: events_machine; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_machine ON public.events USING btree (machine, id);


--
-- Name: object_keys_owner; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX object_keys_owner ON public.object_keys USING btree (kind, name);


--
-- Name: object_keys object_keys_kind_name_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.object_keys
    ADD CONSTRAINT object_keys_kind_name_fkey FOREIGN KEY (kind, name) REFERENCES public.objects(kind, name) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--

\unrestrict i9UJb8aAawvFiQY5qLHu5ST8Uj0ocqqp6b7rEOdFceEe4ad8G9gVLb3ASGT2Gge

