// Kiln's web console. Plain JavaScript, no framework, no build step.
//
// Security rule for everything below: text that came from a machine, a person or
// the API is put into the page with textContent or as an attribute value set by
// setAttribute (never parsed as markup, never a URL built from it other than an encoded
// #fragment), so a machine named <script> or javascript:... stays text. The
// server's Content-Security-Policy forbids inline script as a second wall.
'use strict';
(() => {
  const CSRF_HEADER = 'X-Kiln-CSRF';
  const POLL_MS = 2000;
  const main = document.getElementById('main');
  let session = null;
  let cleanups = [];

  // ---- DOM ------------------------------------------------------------------
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, kids);
    return el;
  }
  const SVG = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(SVG, tag);
    setAttrs(el, attrs);
    append(el, kids);
    return el;
  }
  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'text') el.textContent = String(v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  function append(el, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k === null || k === undefined || k === false) continue;
      el.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
  }
  function render(...nodes) {
    main.replaceChildren(...nodes.flat());
  }
  const machineHref = (name) => '#/machine/' + encodeURIComponent(name);
  const stateBadge = (st) => h('span', { class: 'state state-' + String(st || 'new').replace(/[^a-z-]/g, '') }, st || 'new');
  const fmtTime = (t) => (t ? new Date(t).toLocaleString() : '');
  function fmtAgo(t) {
    if (!t) return '';
    const s = Math.round((Date.now() - new Date(t).getTime()) / 1000);
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 86400) return Math.round(s / 3600) + ' h ago';
    return Math.round(s / 86400) + ' d ago';
  }
  function fmtDur(ms) {
    if (!(ms >= 0)) return '';
    if (ms < 1000) return ms + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
    return Math.floor(ms / 60000) + ' min ' + Math.round((ms % 60000) / 1000) + ' s';
  }
  function fmtBytes(n) {
    if (!(n >= 0)) return '';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + ' ' + u[i];
  }
  const canOperate = () => session && (session.role === 'operator' || session.role === 'admin');

  // ---- API ------------------------------------------------------------------
  async function api(method, path, body) {
    const opts = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (method !== 'GET') {
      opts.headers[CSRF_HEADER] = session ? session.csrf : '';
      if (body !== undefined) {
        opts.headers['Content-Type'] = 'application/json';
        opts.body = JSON.stringify(body);
      }
    }
    const r = await fetch(path, opts);
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (r.status === 401 && !path.startsWith('/ui/')) {
      session = null;
      route();
      throw new Error('signed out');
    }
    if (!r.ok) {
      const err = new Error((data && data.error) || r.status + ' ' + r.statusText);
      err.status = r.status;
      throw err;
    }
    return data;
  }

  // every runs fn now and then every ms (a number, or a function giving it)
  // until the page changes.
  function every(ms, fn) {
    let stopped = false;
    let timer = null;
    const tick = async () => {
      try { await fn(); } catch (e) { /* shown by fn; keep polling */ }
      if (!stopped) timer = setTimeout(tick, typeof ms === 'function' ? ms() : ms);
    };
    tick();
    cleanups.push(() => { stopped = true; clearTimeout(timer); });
  }

  // watch follows a Server-Sent Events stream (the API's ?watch=1) without
  // missing a change between what the page read and the stream. start() reads
  // what the page shows and returns the URL of the stream that goes on from
  // exactly there: a kind's watch without a version (its first messages are the
  // list itself, read in one snapshot with the point the stream goes on from;
  // opts.reset() then drops what an earlier stream gave) or a watch from the
  // list's resourceVersion. An EventSource that reconnects resumes from the last
  // id it got; when it cannot (410: retention removed that part of the log) the
  // stream ends and start() reads again. When the server has no stream (404,
  // 501, a plain JSON answer from a Kiln without it) it falls back to polling:
  // poll() every pollMs.
  function watch(start, handlers, poll, pollMs, onOpen, reset) {
    let polling = false;
    const fallback = () => {
      if (polling) return;
      polling = true;
      setLive('live: polling every ' + Math.round((typeof pollMs === 'function' ? pollMs() : pollMs || POLL_MS) / 1000) + ' s');
      every(pollMs || POLL_MS, poll);
    };
    if (typeof EventSource === 'undefined') { fallback(); return; }
    let closed = false;
    let es = null;
    let started = false;
    cleanups.push(() => { closed = true; if (es) es.close(); });
    const open = async () => {
      let url;
      try { url = await start(); } catch (e) { if (!closed) fallback(); return; }
      if (closed) return;
      const stream = new EventSource(url);
      es = stream;
      let opened = false;
      stream.onopen = () => {
        setLive('live: event stream');
        if (!opened && reset) reset();
        if (!started && onOpen) onOpen();
        opened = true;
        started = true;
      };
      for (const [type, fn] of Object.entries(handlers)) {
        stream.addEventListener(type, (e) => {
          try { fn(JSON.parse(e.data)); } catch (err) { /* a malformed message is skipped */ }
        });
      }
      stream.onerror = () => {
        if (stream.readyState !== EventSource.CLOSED) { setLive('live: reconnecting…'); return; }
        stream.close();
        if (closed) return;
        // A stream that worked and cannot resume (410): read again, follow from there.
        if (opened) { setLive('live: reconnecting…'); setTimeout(() => { if (!closed) open(); }, 1000); } else fallback();
      };
    };
    open();
  }
  function setLive(text) {
    document.getElementById('live').textContent = text;
  }

  // ---- the fleet, kept current while a page needs it --------------------------
  const fleet = { items: new Map(), loaded: false, error: '' };
  async function loadMachines() {
    const items = [];
    let cont = '';
    do {
      const d = await api('GET', '/api/v1/machines?limit=1000' + (cont ? '&continue=' + encodeURIComponent(cont) : ''));
      items.push(...d.items);
      cont = d.continue || '';
    } while (cont && items.length < 100000);
    fleet.items = new Map(items.map((m) => [m.metadata.name, m]));
    fleet.loaded = true;
  }
  function watchFleet(onChange) {
    // A burst (the stream's first messages are the whole list) draws once.
    let drawing = null;
    const changed = () => { if (!drawing) drawing = setTimeout(() => { drawing = null; onChange(); }, 50); };
    cleanups.push(() => clearTimeout(drawing));
    const upsert = (o) => { if (o && o.metadata) { fleet.items.set(o.metadata.name, o); changed(); } };
    // The stream without a version starts with the list (ADDED, in one snapshot
    // with where it goes on): no separate list that a change could slip past.
    watch(async () => '/api/v1/machines?watch=1', {
      ADDED: upsert,
      MODIFIED: upsert,
      DELETED: (o) => { if (o && o.metadata) { fleet.items.delete(o.metadata.name); changed(); } },
    }, async () => {
      try { await loadMachines(); fleet.error = ''; } catch (e) { fleet.error = e.message; }
      onChange();
    // Every 2 s for up to 2,000 machines, then slower: a poll reads the whole
    // list, and the event stream (when the server has it) replaces polling.
    }, () => POLL_MS * Math.max(1, Math.ceil(fleet.items.size / 2000)), null,
    () => { fleet.items = new Map(); fleet.loaded = true; fleet.error = ''; });
  }
  const macs = (m) => ((m.spec && m.spec.interfaces) || []).map((i) => i.mac || '');
  const ips = (m) => ((m.spec && m.spec.interfaces) || []).map((i) => i.ip || '').filter(Boolean);
  const stateOf = (m) => (m.status && m.status.state) || 'new';

  // ---- pages ----------------------------------------------------------------
  const fleetView = { state: '', label: '', q: '' };
  function pageFleet() {
    const counts = h('div', { class: 'counts', role: 'group', 'aria-label': 'Machines by state' });
    const search = h('input', { type: 'search', id: 'search', placeholder: 'Search name, MAC or IP (/)', 'aria-label': 'Search machines', value: fleetView.q });
    const label = h('input', { type: 'search', id: 'label', placeholder: 'Label filter: key=value', 'aria-label': 'Filter by label', value: fleetView.label });
    const tbody = h('tbody');
    const status = h('p', { class: 'muted', id: 'fleet-status' });
    search.addEventListener('input', () => { fleetView.q = search.value; draw(); });
    label.addEventListener('input', () => { fleetView.label = label.value; draw(); });
    render(
      h('h1', { text: 'Fleet' }),
      counts,
      h('div', { class: 'filters' }, search, label),
      h('table', { id: 'machines' },
        h('thead', {}, h('tr', {}, ['Name', 'State', 'Profile', 'MAC', 'IP', 'Labels', 'Last seen'].map((c) => h('th', { scope: 'col', text: c })))),
        tbody),
      status);
    const keyHandler = (e) => {
      if (e.key === '/' && document.activeElement.tagName !== 'INPUT') { e.preventDefault(); search.focus(); }
    };
    document.addEventListener('keydown', keyHandler);
    cleanups.push(() => document.removeEventListener('keydown', keyHandler));

    function matches(m) {
      if (fleetView.state && stateOf(m) !== fleetView.state) return false;
      const lf = fleetView.label.trim();
      if (lf) {
        const [k, v] = lf.split('=', 2).map((x) => x.trim());
        const labels = m.metadata.labels || {};
        if (!(k in labels) || (v !== undefined && labels[k] !== v)) return false;
      }
      const q = fleetView.q.trim().toLowerCase();
      if (q) {
        const hay = [m.metadata.name, ...macs(m), ...ips(m), ...((m.spec && m.spec.interfaces) || []).map((i) => i.hostname || '')];
        if (!hay.some((x) => String(x).toLowerCase().includes(q))) return false;
      }
      return true;
    }
    function draw() {
      const all = [...fleet.items.values()];
      const byState = {};
      for (const m of all) byState[stateOf(m)] = (byState[stateOf(m)] || 0) + 1;
      counts.replaceChildren(
        ...['', 'new', 'provisioning', 'provisioned', 'failed'].map((st) =>
          h('button', {
            type: 'button', 'aria-pressed': String(fleetView.state === st), 'data-state': st || 'all',
            onclick: () => { fleetView.state = st; draw(); },
          }, h('b', { text: st ? byState[st] || 0 : all.length }), st || 'all')));
      const shown = all.filter(matches).sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
      tbody.replaceChildren(...shown.slice(0, 2000).map((m) => h('tr', { 'data-machine': m.metadata.name },
        h('td', {}, h('a', { href: machineHref(m.metadata.name), text: m.metadata.name })),
        h('td', {}, stateBadge(stateOf(m))),
        h('td', { text: (m.spec && m.spec.profile) || '' }),
        h('td', { class: 'mono', text: macs(m).join(' ') }),
        h('td', { class: 'mono', text: ips(m).join(' ') }),
        h('td', {}, Object.entries(m.metadata.labels || {}).map(([k, v]) => h('span', { class: 'label', text: k + '=' + v }))),
        h('td', { text: fmtAgo(m.status && m.status.lastSeen) }))));
      status.textContent = fleet.error ? 'Error: ' + fleet.error
        : shown.length + ' of ' + all.length + ' machines' + (shown.length > 2000 ? ' (first 2000 shown: narrow the search)' : '');
    }
    draw();
    watchFleet(draw);
  }

  // category groups a timeline event by the step of the boot it belongs to.
  function category(type) {
    const t = String(type);
    if (t.startsWith('DHCP')) return 'dhcp';
    if (t.startsWith('TFTP')) return 'tftp';
    if (t.startsWith('BootScript') || t === 'HTTPBootFile' || t.startsWith('Boot')) return 'script';
    if (t.startsWith('Artifact')) return 'artifact';
    if (t.startsWith('Enroll') || t.startsWith('Certificate') || t === 'Enrolled') return 'enroll';
    if (t.startsWith('Workflow') || t.startsWith('Action')) return 'workflow';
    if (t === 'PhoneHome') return 'phonehome';
    if (t.startsWith('Power')) return 'power';
    return 'other';
  }

  function timelineStrip(events) {
    const w = 1000, hgt = 46;
    const svg = s('svg', { class: 'strip', viewBox: `0 0 ${w} ${hgt}`, role: 'img', 'aria-label': 'Timeline of the events below' });
    if (events.length === 0) return svg;
    const t0 = new Date(events[0].time).getTime();
    const t1 = new Date(events[events.length - 1].time).getTime();
    const span = Math.max(t1 - t0, 1);
    svg.append(s('line', { x1: 10, x2: w - 10, y1: 23, y2: 23, stroke: '#d8dde3' }));
    for (const e of events) {
      const x = 10 + ((new Date(e.time).getTime() - t0) / span) * (w - 20);
      svg.append(s('circle', { cx: x.toFixed(1), cy: 23, r: 6, class: 'cat-' + category(e.type) },
        s('title', { text: e.type + ': ' + (e.message || '') })));
    }
    svg.append(s('text', { x: 10, y: 42, 'font-size': 11, fill: '#5c6670', text: fmtTime(events[0].time) }));
    svg.append(s('text', { x: w - 10, y: 42, 'font-size': 11, fill: '#5c6670', 'text-anchor': 'end', text: 'span ' + fmtDur(t1 - t0) }));
    return svg;
  }

  function pageMachine(name) {
    const head = h('div');
    const actions = h('div', { class: 'actions', id: 'machine-actions' });
    const strip = h('div');
    const timeline = h('ol', { class: 'timeline', id: 'timeline', 'aria-label': 'Boot timeline' });
    const facts = h('dl', { class: 'facts', id: 'facts' });
    const wf = h('div', { id: 'workflow' });
    const msg = h('p', { id: 'machine-message', role: 'status' });
    render(h('p', {}, h('a', { href: '#/fleet', text: '← Fleet' })), head, actions, msg,
      h('h2', { text: 'Timeline' }), strip, timeline,
      h('div', { class: 'grid' },
        h('section', {}, h('h2', { text: 'Workflow' }), wf),
        h('section', {}, h('h2', { text: 'Facts' }), facts)));

    if (canOperate()) {
      const act = (label, what, fn) => h('button', {
        type: 'button', class: 'danger', 'data-action': what,
        onclick: async () => {
          if (!(await confirmAction(label + ' ' + name + '?', what === 'reprovision'
            ? 'The machine gets a new workflow and network-boots into the installer: its disk will be overwritten.'
            : 'This changes the power state of the machine through its BMC.'))) return;
          msg.className = '';
          msg.textContent = label + '…';
          try {
            await fn();
            msg.className = 'ok';
            msg.textContent = label + ': done';
            refresh();
          } catch (e) {
            msg.className = 'error';
            msg.textContent = label + ' failed: ' + e.message;
          }
        },
      }, label);
      const path = '/api/v1/machines/' + encodeURIComponent(name);
      actions.replaceChildren(
        act('Reprovision', 'reprovision', () => api('POST', path + '/reprovision', {})),
        act('Power on', 'power-on', () => api('POST', path + '/power', { op: 'on' })),
        act('Power off', 'power-off', () => api('POST', path + '/power', { op: 'off' })),
        act('Power cycle', 'power-cycle', () => api('POST', path + '/power', { op: 'cycle' })));
    }

    async function refresh() {
      const [m, evs, w] = await Promise.all([
        api('GET', '/api/v1/machines/' + encodeURIComponent(name)),
        api('GET', '/api/v1/machines/' + encodeURIComponent(name) + '/events?limit=200'),
        api('GET', '/api/v1/machines/' + encodeURIComponent(name) + '/workflow').catch((e) => (e.status === 404 ? null : Promise.reject(e))),
      ]);
      head.replaceChildren(
        h('h1', {}, h('span', { id: 'machine-name', text: m.metadata.name }), ' ', stateBadge(stateOf(m))),
        h('p', { class: 'muted' },
          'Profile ', (m.spec && m.spec.profile) || '—', ' · MAC ', macs(m).join(', ') || '—', ' · IP ', ips(m).join(', ') || '—',
          ' · last seen ', fmtAgo(m.status && m.status.lastSeen) || 'never'),
        h('p', {}, Object.entries(m.metadata.labels || {}).map(([k, v]) => h('span', { class: 'label', text: k + '=' + v }))));
      drawEvents(evs.items || []);
      drawFacts((m.status && m.status.facts) || {});
      drawWorkflow(w);
      return evs.resourceVersion || '';
    }
    function drawEvents(items) {
      strip.replaceChildren(timelineStrip(items));
      let prev = null;
      const t0 = items.length ? new Date(items[0].time).getTime() : 0;
      timeline.replaceChildren(...items.map((e) => {
        const t = new Date(e.time).getTime();
        const li = h('li', { class: 'cat-' + category(e.type), 'data-type': e.type },
          h('span', { class: 't', text: fmtTime(e.time) }),
          h('span', { class: 't', text: '+' + fmtDur(t - t0) + (prev !== null ? ' (Δ ' + fmtDur(t - prev) + ')' : '') }),
          h('span', { class: 'type', text: e.type }),
          h('span', { class: 'msg', text: e.message || '' }));
        prev = t;
        return li;
      }));
    }
    function drawFacts(f) {
      const rows = Object.keys(f).sort().slice(0, 500).flatMap((k) => [
        h('dt', { text: k }),
        h('dd', { class: 'mono', text: typeof f[k] === 'string' ? f[k] : JSON.stringify(f[k]) })]);
      facts.replaceChildren(...(rows.length ? rows : [h('dd', { class: 'muted', text: 'No facts reported yet.' })]));
    }
    function drawWorkflow(w) {
      if (!w || !w.status) { wf.replaceChildren(h('p', { class: 'muted', text: 'No workflow.' })); return; }
      const st = w.status;
      wf.replaceChildren(
        h('p', {}, h('span', { class: 'mono', text: w.name }), ' ', stateBadge(st.state), st.message ? h('span', { class: 'error', text: ' ' + st.message }) : null),
        h('table', {}, h('thead', {}, h('tr', {}, ['Action', 'State', 'Progress', 'Took'].map((c) => h('th', { scope: 'col', text: c })))),
          h('tbody', {}, (st.actions || []).map((a) => h('tr', {},
            h('td', {}, h('span', { text: a.name }), h('div', { class: 'muted', text: a.type })),
            h('td', {}, stateBadge(a.state), a.message ? h('div', { class: 'error', text: a.message }) : null),
            h('td', {}, progressOf(a)),
            h('td', { text: a.startedAt ? fmtDur(new Date(a.finishedAt || Date.now()) - new Date(a.startedAt)) : '' }))))));
    }
    function progressOf(a) {
      const p = a.progress;
      if (!p) return a.state === 'succeeded' ? '100%' : '';
      const pct = p.percent || (p.total ? (100 * p.bytes) / p.total : 0);
      return [h('progress', { max: 100, value: pct.toFixed(0), 'aria-label': a.name + ' progress' }),
        ' ', fmtBytes(p.bytes), p.total ? ' / ' + fmtBytes(p.total) : ''];
    }
    let failures = 0;
    // With the event stream, a machine's events refresh the page at once; the
    // workflow's progress reports are not events, so it is read every 5 s too.
    // The stream goes on from the event log's head as the timeline was read, so
    // that an event between the two is not missed.
    const enc = encodeURIComponent;
    watch(async () => {
      const rv = await refresh();
      return '/api/v1/events?watch=1&machine=' + enc(name) + (rv ? '&resourceVersion=' + enc(rv) : '');
    }, {
      event: (e) => { if (e && e.machine === name) refresh().catch(() => {}); },
    }, async () => {
      try {
        await refresh();
        failures = 0;
      } catch (e) {
        if (++failures === 1 || e.status === 404) { msg.className = 'error'; msg.textContent = e.message; }
        throw e;
      }
    }, POLL_MS, () => every(5000, refresh));
  }

  function confirmAction(title, text) {
    const dlg = document.getElementById('confirm');
    document.getElementById('confirm-title').textContent = title;
    document.getElementById('confirm-text').textContent = text;
    return new Promise((resolve) => {
      dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
      dlg.returnValue = '';
      dlg.showModal();
      document.getElementById('confirm-ok').focus();
    });
  }

  function pageWorkflows() {
    const tbody = h('tbody');
    const note = h('p', { class: 'muted' });
    render(h('h1', { text: 'Workflows in progress' }),
      h('table', { id: 'workflows' }, h('thead', {}, h('tr', {}, ['Workflow', 'Machine', 'State', 'Current action', 'Started'].map((c) => h('th', { scope: 'col', text: c })))), tbody), note);
    every(POLL_MS, async () => {
      const d = await api('GET', '/api/v1/workflows?limit=5000');
      const active = (d.items || []).filter((w) => w.status && (w.status.state === 'running' || w.status.state === 'pending'));
      tbody.replaceChildren(...active.map((w) => h('tr', {},
        h('td', { class: 'mono', text: w.metadata.name }),
        h('td', {}, h('a', { href: machineHref(w.spec.machine), text: w.spec.machine })),
        h('td', {}, stateBadge(w.status.state)),
        h('td', { text: w.status.currentAction || '' }),
        h('td', { text: fmtAgo(w.status.startedAt || w.status.createdAt) }))));
      note.textContent = active.length ? '' : 'No workflow is running.';
    });
  }

  function pageFailed() {
    const tbody = h('tbody');
    const note = h('p', { class: 'muted' });
    const errors = new Map();
    render(h('h1', { text: 'Failed machines' }),
      h('table', { id: 'failed' }, h('thead', {}, h('tr', {}, ['Machine', 'Error', 'Since'].map((c) => h('th', { scope: 'col', text: c })))), tbody), note);
    every(POLL_MS * 2, async () => {
      await loadMachines();
      const failed = [...fleet.items.values()].filter((m) => stateOf(m) === 'failed');
      await Promise.all(failed.slice(0, 100).filter((m) => !errors.has(m.metadata.name)).map(async (m) => {
        try {
          const w = await api('GET', '/api/v1/machines/' + encodeURIComponent(m.metadata.name) + '/workflow');
          const a = ((w.status && w.status.actions) || []).find((x) => x.state === 'failed' || x.state === 'timed-out');
          errors.set(m.metadata.name, { msg: (a && a.name + ': ' + (a.message || a.state)) || (w.status && w.status.message) || '', at: w.status && w.status.finishedAt });
        } catch (e) {
          errors.set(m.metadata.name, { msg: '', at: null });
        }
      }));
      tbody.replaceChildren(...failed.map((m) => {
        const e = errors.get(m.metadata.name) || {};
        return h('tr', {}, h('td', {}, h('a', { href: machineHref(m.metadata.name), text: m.metadata.name })),
          h('td', { class: 'error', text: e.msg || '' }), h('td', { text: fmtAgo(e.at) }));
      }));
      note.textContent = failed.length ? '' : 'No machine has failed.';
    });
  }

  function pageAudit() {
    const filter = h('input', { type: 'search', id: 'audit-filter', placeholder: 'Filter: actor, action, kind, name', 'aria-label': 'Filter audit entries' });
    const verifyOut = h('span', { id: 'verify-result', role: 'status' });
    const verify = h('button', {
      type: 'button', id: 'verify',
      onclick: async () => {
        verifyOut.className = '';
        verifyOut.textContent = 'Verifying…';
        try {
          const v = await api('GET', '/api/v1/audit/verify');
          verifyOut.className = v.ok ? 'ok' : 'error';
          verifyOut.textContent = v.ok ? `Chain intact: ${v.entries} entries` + (v.anchored ? `, anchored at ${v.anchored}` : '') : 'Chain broken: ' + v.error;
        } catch (e) {
          verifyOut.className = 'error';
          verifyOut.textContent = e.message;
        }
      },
    }, 'Verify chain');
    const tbody = h('tbody');
    let entries = [];
    render(h('h1', { text: 'Audit log' }), h('div', { class: 'filters' }, filter, verify, verifyOut),
      h('table', { id: 'audit' }, h('thead', {}, h('tr', {}, ['#', 'Time', 'Actor', 'Action', 'Object', 'Summary'].map((c) => h('th', { scope: 'col', text: c })))), tbody));
    const draw = () => {
      const q = filter.value.trim().toLowerCase();
      const shown = entries.filter((e) => !q || [e.actor, e.action, e.kind, e.name, e.summary].some((x) => String(x || '').toLowerCase().includes(q)));
      tbody.replaceChildren(...shown.slice(0, 1000).map((e) => h('tr', {},
        h('td', { text: e.seq }), h('td', { text: fmtTime(e.time) }), h('td', { class: 'actor', text: e.actor }),
        h('td', { text: e.action }), h('td', { text: e.kind + '/' + e.name }), h('td', { text: e.summary || '' }))));
    };
    filter.addEventListener('input', draw);
    every(POLL_MS, async () => {
      const d = await api('GET', '/api/v1/audit?tail=1000');
      entries = (d.items || []).slice().reverse();
      draw();
    });
  }

  // Enrollment tallies per hour over the last day: provisioned (a workflow
  // succeeded), failed (failed or timed out), refused (an enrollment refused).
  function pageTallies() {
    const chart = h('div', { id: 'tally-chart' });
    const note = h('p', { class: 'muted' });
    render(h('h1', { text: 'Enrollments per hour (last 24 h)' }),
      h('p', { class: 'legend' }, [['provisioned', '#1a7f37'], ['failed', '#c62828'], ['refused', '#9a6700']].map(([n, c]) => {
        const sw = h('i');
        sw.style.background = c;
        return h('span', {}, sw, n);
      })), chart, note);
    every(POLL_MS * 5, async () => {
      const now = Date.now();
      const hours = 24;
      const start = Math.floor(now / 3600000) * 3600000 - (hours - 1) * 3600000;
      const buckets = Array.from({ length: hours }, () => ({ provisioned: 0, failed: 0, refused: 0 }));
      const add = (t, kind) => {
        const i = Math.floor((new Date(t).getTime() - start) / 3600000);
        if (i >= 0 && i < hours) buckets[i][kind]++;
      };
      const classify = (e) => {
        if (e.type === 'WorkflowSucceeded') add(e.time, 'provisioned');
        else if (e.type === 'WorkflowFailed' || e.type === 'WorkflowTimedOut') add(e.time, 'failed');
        else if (e.type === 'EnrollRefused') add(e.time, 'refused');
      };
      let source;
      try {
        const d = await api('GET', '/api/v1/events?limit=10000');
        (d.items || []).forEach(classify);
        source = 'from the event log';
      } catch (e) {
        if (e.status !== 404) throw e;
        // No fleet-wide event list on this Kiln: each machine's events (the
        // first 300 machines), and refusals from the audit log.
        await loadMachines();
        const names = [...fleet.items.keys()].slice(0, 300);
        for (let i = 0; i < names.length; i += 10) {
          const chunk = await Promise.all(names.slice(i, i + 10).map((n) =>
            api('GET', '/api/v1/machines/' + encodeURIComponent(n) + '/events?limit=500').catch(() => ({ items: [] }))));
          chunk.forEach((d) => (d.items || []).forEach(classify));
        }
        const a = await api('GET', '/api/v1/audit?tail=5000');
        (a.items || []).filter((x) => x.action === 'enroll-refused').forEach((x) => add(x.time, 'refused'));
        source = `from ${names.length} machines' timelines and the audit log`;
      }
      chart.replaceChildren(barChart(buckets, start));
      const sum = buckets.reduce((acc, b) => acc + b.provisioned + b.failed + b.refused, 0);
      note.textContent = sum + ' outcomes in 24 h, ' + source + '.';
    });
  }

  function barChart(buckets, start) {
    const W = 1100, H = 260, L = 40, B = 30, T = 10;
    const max = Math.max(1, ...buckets.map((b) => Math.max(b.provisioned, b.failed, b.refused)));
    const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Enrollment outcomes per hour' });
    const cw = (W - L - 10) / buckets.length;
    const y = (v) => H - B - ((H - B - T) * v) / max;
    for (let i = 0; i <= 4; i++) {
      const v = Math.round((max * i) / 4);
      svg.append(s('line', { x1: L, x2: W - 10, y1: y(v), y2: y(v), stroke: '#eef0f2' }),
        s('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end', 'font-size': 11, fill: '#5c6670', text: v }));
    }
    const colors = { provisioned: '#1a7f37', failed: '#c62828', refused: '#9a6700' };
    buckets.forEach((b, i) => {
      const x0 = L + i * cw + cw * 0.1;
      const bw = (cw * 0.8) / 3;
      ['provisioned', 'failed', 'refused'].forEach((k, j) => {
        if (!b[k]) return;
        svg.append(s('rect', { x: (x0 + j * bw).toFixed(1), y: y(b[k]).toFixed(1), width: bw.toFixed(1), height: (H - B - y(b[k])).toFixed(1), fill: colors[k], 'data-kind': k },
          s('title', { text: `${new Date(start + i * 3600000).getHours()}:00 ${k}: ${b[k]}` })));
      });
      if (i % 3 === 0) {
        svg.append(s('text', { x: (L + i * cw + cw / 2).toFixed(1), y: H - 10, 'text-anchor': 'middle', 'font-size': 11, fill: '#5c6670', text: new Date(start + i * 3600000).getHours() + ':00' }));
      }
    });
    return svg;
  }

  async function pageLogin() {
    let how = { sso: false, tokenLogin: false };
    try {
      const r = await fetch('/ui/session', { credentials: 'same-origin' });
      if (r.ok) { session = await r.json(); return route(); }
      how = await r.json();
    } catch (e) { /* shown below */ }
    const err = h('p', { class: 'error', role: 'alert' });
    const box = h('div', { class: 'login' }, h('h1', { text: 'Sign in to Kiln' }));
    if (how.sso) box.append(h('p', {}, h('a', { href: '/ui/login', class: 'primary', id: 'sso-login', text: 'Sign in with single sign-on' })));
    if (how.tokenLogin) {
      const tok = h('input', { type: 'password', id: 'token', autocomplete: 'off', 'aria-label': 'API token' });
      box.append(h('form', {
        onsubmit: async (e) => {
          e.preventDefault();
          const r = await fetch('/ui/login/token', { method: 'POST', credentials: 'same-origin', body: new URLSearchParams({ token: tok.value }) });
          if (r.ok) { session = await r.json(); route(); } else { err.textContent = 'That API token is not valid.'; }
        },
      }, h('label', { for: 'token', text: how.sso ? 'Or with an API token' : 'API token' }), tok, h('button', { type: 'submit', class: 'primary', text: 'Sign in' })));
    }
    box.append(err);
    render(box);
  }

  // ---- routing --------------------------------------------------------------
  async function route() {
    cleanups.forEach((f) => f());
    cleanups = [];
    setLive('');
    if (!session) {
      try {
        const r = await fetch('/ui/session', { credentials: 'same-origin' });
        if (r.ok) session = await r.json();
      } catch (e) { /* the login page says what it can */ }
    }
    const who = document.getElementById('who');
    const logout = document.getElementById('logout');
    if (!session) {
      who.textContent = '';
      logout.hidden = true;
      return pageLogin();
    }
    who.textContent = session.actor.replace(/^user:/, '') + ' · ' + session.role;
    logout.hidden = false;
    const [, page, arg] = (location.hash.match(/^#\/([a-z]+)(?:\/(.*))?$/) || []);
    for (const a of document.querySelectorAll('nav a')) {
      if (a.dataset.page === (page === 'machine' ? 'fleet' : page || 'fleet')) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    switch (page) {
      case 'machine': pageMachine(decodeURIComponent(arg || '')); break;
      case 'workflows': pageWorkflows(); break;
      case 'failed': pageFailed(); break;
      case 'audit': pageAudit(); break;
      case 'tallies': pageTallies(); break;
      default: pageFleet();
    }
    main.focus({ preventScroll: true });
  }

  document.getElementById('logout').addEventListener('click', async () => {
    try { await api('POST', '/ui/logout'); } catch (e) { /* signed out anyway below */ }
    session = null;
    location.hash = '';
    route();
  });
  window.addEventListener('hashchange', route);
  route();
})();
