/**
 * A small express application with express-session and BatonStore, run by the integration
 * tests as a child process. It is plain CommonJS run by plain node, and it loads the store
 * as an application does, by the package name ('baton/express-session' through package.json
 * "exports", compiled in dist/), so the export map is tested too.
 *
 * Environment: APP_BATON_API (the sidecar's API address, required), APP_SECRET (cookie
 * signing), APP_MAX_AGE_MS (cookie maxAge; absent: a browser-session cookie),
 * APP_MIN_REPLICAS, APP_STORE (baton, the default; whole: a store that writes every field on
 * each save, as whole-session stores do; last-read: one that compares a save with the last
 * read of the session's id rather than its own request's read — both for the test that
 * shows what they lose).
 * It listens on 127.0.0.1, a free port, and prints {"listening": port} on stdout. SIGTERM
 * closes the server and the store's client.
 *
 * Routes (the session is the cookie's):
 * - POST /set?field=&value=        sets one field (value is JSON) and answers the session
 * - POST /remove?field=            deletes one field
 * - POST /hold?field=&value=&gate= sets one field, then waits for POST /open?gate= before it
 *                                  answers (express-session saves as the answer ends), so a
 *                                  test decides the order in which concurrent saves land
 * - GET  /held                     the gates waiting
 * - POST /open?gate=               lets a held request finish
 * - GET  /session                  { id, session }
 * - POST /logout                   destroys the session
 */
'use strict';

const express = require('express');
const session = require('express-session');
const { BatonStore } = require('baton/express-session');

const address = process.env.APP_BATON_API;
if (!address) throw new Error('APP_BATON_API is required');

class WholeSessionStore extends BatonStore {
  snapshotOf() {
    return undefined;
  }
}

/** Compares a save with the last read of its id, whichever request made it (readById is the store's private fallback). */
class LastReadStore extends BatonStore {
  snapshotOf(sid) {
    return this.readById.get(sid);
  }
}

const STORES = { baton: BatonStore, whole: WholeSessionStore, 'last-read': LastReadStore };
const Store = STORES[process.env.APP_STORE ?? 'baton'];
const store = new Store({ address, minReplicas: Number(process.env.APP_MIN_REPLICAS ?? 0) });
const maxAge = process.env.APP_MAX_AGE_MS ? Number(process.env.APP_MAX_AGE_MS) : undefined;

const app = express();
app.use(
  session({
    store,
    secret: process.env.APP_SECRET ?? 'test secret',
    resave: false,
    saveUninitialized: false,
    cookie: maxAge === undefined ? {} : { maxAge },
  }),
);

/** gate name → release function of the held request. */
const held = new Map();

function view(req) {
  return { id: req.sessionID, session: req.session };
}

app.post('/set', (req, res) => {
  req.session[String(req.query.field)] = JSON.parse(String(req.query.value));
  res.json(view(req));
});

app.post('/remove', (req, res) => {
  delete req.session[String(req.query.field)];
  res.json(view(req));
});

app.post('/hold', (req, res) => {
  const gate = String(req.query.gate);
  req.session[String(req.query.field)] = JSON.parse(String(req.query.value));
  held.set(gate, () => res.json(view(req)));
});

app.get('/held', (_req, res) => {
  res.json([...held.keys()]);
});

app.post('/open', (req, res) => {
  const gate = String(req.query.gate);
  const release = held.get(gate);
  if (release === undefined) return res.status(404).json({ error: `no gate ${gate}` });
  held.delete(gate);
  release();
  res.json({ opened: gate });
});

app.get('/session', (req, res) => {
  res.json(view(req));
});

app.post('/logout', (req, res, next) => {
  req.session.destroy((err) => (err ? next(err) : res.json({ destroyed: true })));
});

app.use((err, _req, res, _next) => {
  res.status(500).json({ error: String(err && err.message) });
});

const server = app.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ listening: server.address().port }) + '\n');
});

process.on('SIGTERM', () => {
  store.close();
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
