/*
 * conjuringd hub: the first Shift+Enter of a notebook is never lost.
 *
 * JupyterLab's cell executor (@jupyterlab/notebook runCell) drops a run silently while the notebook's
 * session is being created: the kernel's name is known (so it does not start one) but the session is
 * not there yet, and CodeCell.execute returns without sending anything (the cell stays "[ ]"). A run
 * before that, while the notebook is still initializing, starts a second kernel. This executor, which
 * replaces @jupyterlab/notebook-extension:cell-executor, holds such runs until the notebook's session
 * context is ready with its kernel (or has none), then hands them, in order, to JupyterLab's runCell.
 *
 * Hand-written as a module federation container (what `jupyter labextension build` emits), so the image
 * needs no Node.js build: JupyterLab calls init(shareScope) and then get("./extension").
 */
(function () {
  "use strict";
  var NAME = "@conjuring/first-run";
  var WAIT_MS = 120000; // a busy class: kernels may take long to start; after this, run as JupyterLab would
  var scope = null;
  var queues = new WeakMap(); // session context -> {promise, waiting}: runs held for it, in order

  function shared(pkg) {
    var versions = scope && scope[pkg];
    if (!versions) return Promise.reject(new Error(NAME + ": " + pkg + " is not shared"));
    var keys = Object.keys(versions);
    var chosen = keys.filter(function (v) { return versions[v].loaded; })[0] || keys.sort().pop();
    var entry = versions[chosen];
    entry.loaded = 1;
    return Promise.resolve(entry.get()).then(function (factory) { return factory(); });
  }

  function settled(ctx) {
    return ctx.isDisposed || (ctx.isReady && (ctx.hasNoKernel || !!(ctx.session && ctx.session.kernel)));
  }

  function whenSettled(ctx) {
    return new Promise(function (resolve) {
      var signals = [ctx.kernelChanged, ctx.sessionChanged, ctx.statusChanged, ctx.connectionStatusChanged];
      var timer = null;
      function done() {
        clearTimeout(timer);
        signals.forEach(function (s) { if (s) s.disconnect(check); });
        resolve();
      }
      function check() { if (settled(ctx)) done(); }
      timer = setTimeout(done, WAIT_MS);
      signals.forEach(function (s) { if (s) s.connect(check); });
      ctx.ready.then(check, check);
      check();
    });
  }

  function executor(notebook) {
    function runCell(options) {
      var ctx = options.sessionContext;
      var held = ctx && queues.get(ctx);
      if (!ctx || options.cell.model.type !== "code" || (!held && settled(ctx))) {
        return notebook.runCell(options);
      }
      if (!held) {
        held = {promise: whenSettled(ctx), waiting: 0};
        queues.set(ctx, held);
      }
      held.waiting += 1;
      var mine = held;
      return held.promise.then(function () {
        mine.waiting -= 1;
        if (mine.waiting === 0 && queues.get(ctx) === mine) queues.delete(ctx);
        return notebook.runCell(options);
      });
    }
    return Object.freeze({runCell: runCell});
  }

  function extension(notebook) {
    return {
      __esModule: true,
      default: {
        id: NAME + ":cell-executor",
        description: "Runs a cell asked for while its notebook is getting its kernel once the kernel is there.",
        autoStart: true,
        provides: notebook.INotebookCellExecutor,
        activate: function () { return executor(notebook); }
      }
    };
  }

  var container = {
    init: function (shareScope) { scope = shareScope; },
    get: function (module) {
      if (module !== "./extension") return Promise.reject(new Error(NAME + ": no module " + module));
      return shared("@jupyterlab/notebook").then(function (notebook) {
        return function () { return extension(notebook); };
      });
    }
  };
  window._JUPYTERLAB = window._JUPYTERLAB || {};
  window._JUPYTERLAB[NAME] = container;
})();
