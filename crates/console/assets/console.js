// The console's shell: sign-in (and one-time setup links), navigation, routing by hash.
import { h, clear, api, session, errorBox, busy, field, setSignedOutHandler } from './ui.js';
import { pages } from './pages.js';

const app = document.getElementById('app');

const NAV = [
  ['tables', 'Tables'], ['sql', 'SQL'], ['auth', 'Auth'], ['storage', 'Storage'],
  ['database', 'Database'], ['ai', 'AI'], ['realtime', 'Realtime'], ['logs', 'Logs & health'], ['api', 'API'], ['audit', 'Audit log'],
];

function signInPage(message) {
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const out = h('div', { 'aria-live': 'polite' }, message ? errorBox({ message }) : null);
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', {
    class: 'card signin',
    onsubmit: (ev) => {
      ev.preventDefault();
      busy(button, out, async () => {
        const r = await api('POST', '/sign-in', { email: email.value, password: password.value }, { noSignOut: true });
        session.csrf = r.csrf; session.email = r.email;
        location.hash = location.hash && !location.hash.startsWith('#setup') ? location.hash : '#/tables';
        shell();
      });
    },
  },
  h('h1', {}, 'agencyflow console'),
  h('p', { class: 'muted' }, 'Operators only. Create an account with ', h('code', {}, 'agencyflow console add-admin EMAIL'), '.'),
  field('E-mail', email), field('Password', password), button, out);
  clear(app, h('main', { id: 'main', class: 'center' }, form));
  email.focus();
}

function setupPage(token) {
  const password = h('input', { type: 'password', autocomplete: 'new-password', required: true, minlength: '10' });
  const out = h('div', { 'aria-live': 'polite' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Set password and sign in');
  const form = h('form', {
    class: 'card signin',
    onsubmit: (ev) => {
      ev.preventDefault();
      busy(button, out, async () => {
        const r = await api('POST', '/setup', { token, password: password.value }, { noSignOut: true });
        session.csrf = r.csrf; session.email = r.email;
        history.replaceState(null, '', '/console/#/tables');
        shell();
      });
    },
  }, h('h1', {}, 'Set your operator password'), field('New password (10 characters or more)', password), button, out);
  clear(app, h('main', { id: 'main', class: 'center' }, form));
  password.focus();
}

let main;
let nav;

function shell() {
  nav = h('nav', { 'aria-label': 'Console sections' },
    h('ul', {}, NAV.map(([id, label]) => h('li', {}, h('a', { href: `#/${id}`, 'data-page': id }, label)))));
  main = h('main', { id: 'main', tabindex: '-1' });
  const signOut = h('button', {
    type: 'button',
    onclick: () => busy(signOut, null, async () => {
      await api('POST', '/sign-out', {});
      session.csrf = null;
      signInPage();
    }),
  }, 'Sign out');
  clear(app,
    h('header', { class: 'top' },
      h('a', { class: 'brand', href: '#/tables' }, 'agencyflow'),
      h('span', { class: 'who' }, session.email),
      signOut),
    h('div', { class: 'layout' }, nav, main),
    h('div', { id: 'notices', class: 'notices', 'aria-live': 'polite' }));
  route();
}

function route() {
  if (!main) return;
  const parts = (location.hash.replace(/^#\/?/, '') || 'tables').split('/').map(decodeURIComponent);
  const page = pages[parts[0]] ? parts[0] : 'tables';
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.page === page) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  document.title = `${NAV.find(([id]) => id === page)[1]} · agencyflow console`;
  main.replaceChildren();
  main.dataset.page = page;
  pages[page](main, parts.slice(1));
}

window.addEventListener('hashchange', () => {
  if (location.hash.startsWith('#setup=')) return boot();
  route();
});

setSignedOutHandler((e) => { session.csrf = null; main = null; signInPage(e.message); });

async function boot() {
  const m = location.hash.match(/^#setup=([A-Za-z0-9_-]+)/);
  if (m) return setupPage(m[1]);
  try {
    const s = await api('GET', '/session', undefined, { noSignOut: true });
    session.csrf = s.csrf; session.email = s.email;
    shell();
  } catch (e) {
    signInPage(e.status === 401 ? null : e.message);
  }
}

boot();
