%# The login page: goal (the local path to go back to), problem (None or (text key, values)).
% rebase("layout", title=t("login.title"))
<div class="box">
<h1>{{t("login.title")}}</h1>
% if problem:
<p class="error" id="login-problem" role="alert">{{t(problem[0], **problem[1])}}</p>
% end
<form method="post" action="/login" id="login-form">
  <input type="hidden" name="next" value="{{goal}}">
  <label for="password">{{t("login.password")}}</label>
  <input type="password" id="password" name="password" autocomplete="current-password" required autofocus dir="ltr">
  <button type="submit">{{t("login.submit")}}</button>
</form>
<p class="muted">{{t("login.help")}}</p>
</div>
