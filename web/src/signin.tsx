// The sign-in screen, as the gateway's configuration says: the identity provider's sign-in
// (OpenID Connect), the development sign-in of `taskmesh dev`, or a pasted token.

import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import type { Auth, SignInConfig } from "./auth";

export function SignIn({ auth, config }: { auth: Auth; config: SignInConfig }) {
  const notice = auth.notice();
  switch (config.signIn) {
    case "oidc":
      return <OidcSignIn auth={auth} notice={notice} issuer={config.issuer} />;
    case "development":
      return <DevelopmentSignIn auth={auth} notice={notice} />;
    case "token":
      return <TokenSignIn auth={auth} notice={notice} />;
  }
}

/** The frame every sign-in form shares. */
function SignInForm({
  kind,
  notice,
  error,
  onSubmit,
  children,
}: {
  kind: SignInConfig["signIn"];
  notice: string;
  error: string;
  onSubmit: () => void | Promise<void>;
  children: ComponentChildren;
}) {
  return (
    <main class="sign-in">
      <form
        data-testid="sign-in"
        data-kind={kind}
        onSubmit={(e) => {
          e.preventDefault();
          void onSubmit();
        }}
      >
        <h1>taskmesh</h1>
        {notice && (
          <p class="notice" role="alert">
            {notice}
          </p>
        )}
        {children}
        {error && (
          <p class="field-errors" role="alert">
            {error}
          </p>
        )}
      </form>
    </main>
  );
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

function OidcSignIn({ auth, notice, issuer }: { auth: Auth; notice: string; issuer: string }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const submit = async () => {
    setBusy(true);
    setError("");
    try {
      await auth.beginOidc(); // the browser leaves for the provider
    } catch (err) {
      // fetch() failing is a TypeError; anything else (bad metadata, an endpoint that is not
      // https) says what it is.
      setError(err instanceof TypeError ? `The identity provider cannot be reached: ${message(err)}` : `Signing in cannot start: ${message(err)}`);
      setBusy(false);
    }
  };
  return (
    <SignInForm kind="oidc" notice={notice} error={error} onSubmit={submit}>
      <p>
        Sign in with your account at <strong>{new URL(issuer).host}</strong>.
      </p>
      <button type="submit" class="primary" disabled={busy}>
        Sign in
      </button>
    </SignInForm>
  );
}

function DevelopmentSignIn({ auth, notice }: { auth: Auth; notice: string }) {
  const [user, setUser] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const submit = async () => {
    setBusy(true);
    setError("");
    try {
      await auth.signInDevelopment(user.trim());
    } catch (err) {
      setError(message(err));
      setBusy(false);
    }
  };
  return (
    <SignInForm kind="development" notice={notice} error={error} onSubmit={submit}>
      <p class="warning" role="note" data-testid="development-warning">
        <strong>DEVELOPMENT ONLY.</strong> Development sign-in: anyone can sign in as anyone; never expose this
        server.
      </p>
      <label>
        User name
        <input
          type="text"
          name="user"
          autocomplete="username"
          required
          value={user}
          onInput={(e) => setUser(e.currentTarget.value)}
          aria-invalid={!!error}
        />
      </label>
      <button type="submit" class="primary" disabled={busy}>
        Sign in
      </button>
    </SignInForm>
  );
}

function TokenSignIn({ auth, notice }: { auth: Auth; notice: string }) {
  const [value, setValue] = useState("");
  const [error, setError] = useState("");
  const submit = async () => {
    try {
      await auth.signInWithToken(value.trim());
    } catch (err) {
      setError(message(err));
    }
  };
  return (
    <SignInForm kind="token" notice={notice} error={error} onSubmit={submit}>
      <p>
        Sign in with a token. For development, mint one with <code>taskmesh token --sub alice</code> and paste its
        last line.
      </p>
      <label>
        Token
        <textarea name="token" rows={4} value={value} onInput={(e) => setValue(e.currentTarget.value)} aria-invalid={!!error} />
      </label>
      <button type="submit" class="primary">
        Sign in
      </button>
    </SignInForm>
  );
}
