// The probe scripts/check_render.py injects before </body> of every page it checks. It waits
// for the page to load and MathJax to typeset, inspects the DOM of the page's content, and writes
// its findings, as base64 JSON, into the data-rc-report attribute of <body>, which Chromium's
// --dump-dom then shows. __MIN_RATIO__ and __CHAPTER__ are filled in per page.
(function () {
  var MIN_RATIO = __MIN_RATIO__;
  var EXPECTED_CHAPTER = __CHAPTER__;
  var REPRS = ['<function ', '<Figure size ', '<matplotlib.', '<bound method ', 'object at 0x'];
  var ALIASES = {fig: 'figure', figs: 'figure', figures: 'figure', eq: 'equation', eqs: 'equation',
                 equations: 'equation', ex: 'exercise', exercises: 'exercise', sec: 'section',
                 sections: 'section', tab: 'table', tables: 'table', ch: 'chapter', chap: 'chapter',
                 chapters: 'chapter'};
  function content() {
    return document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  }
  function snippet(text, n) {
    text = (text || '').replace(/\s+/g, ' ').trim();
    return text.length > n ? text.slice(0, n) + '...' : text;
  }
  function where(node) {
    var el = node.nodeType === 1 ? node : node.parentElement;
    var sec = el && el.closest('section[id]');
    var cell = el && el.closest('.cell');
    var tag = el ? el.tagName.toLowerCase() + (el.className && typeof el.className === 'string'
              ? '.' + el.className.trim().split(/\s+/).slice(0, 2).join('.') : '') : '?';
    return tag + (cell ? ' in a code cell' : '') + (sec ? ' in section #' + sec.id : '');
  }
  // Text the reader sees as prose or output: not code inputs, inline code, scripts or maths.
  function visibleTexts(root) {
    var out = [];
    var walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, null);
    var node;
    while ((node = walker.nextNode())) {
      var el = node.parentElement;
      if (!el || !node.nodeValue.trim()) { continue; }
      if (el.closest('script, style, noscript, textarea, mjx-container, .cell_input, code, .headerlink')) { continue; }
      if (el.closest('pre, .highlight') && !el.closest('.cell_output, .output')) { continue; }
      out.push(node);
    }
    return out;
  }
  function norm(word) {
    word = word.toLowerCase().replace(/\.$/, '');
    return ALIASES[word] || word;
  }
  function textBefore(link) {
    var block = link.parentElement.closest('p, li, dd, dt, td, th, figcaption, h1, h2, h3, h4, div') || link.parentElement;
    var range = document.createRange();
    range.setStart(block, 0);
    range.setEndBefore(link);
    return range.toString().slice(-60);
  }
  function inspect() {
    var root = content();
    var defects = [];
    function add(kind, node, detail) { defects.push({kind: kind, where: where(node), detail: detail}); }

    // 1. raw Markdown tables, and 2. object reprs
    var sep = /\|\s*:?-{3,}:?\s*\|/;
    visibleTexts(root).forEach(function (node) {
      if (node.parentElement.closest('table')) { return; }
      var text = node.nodeValue;
      var lines = text.split('\n').map(function (l) { return l.trim(); });
      if (sep.test(text) || lines.some(function (l) { return l.charAt(0) === '|' && l.indexOf(' | ') >= 0; })) {
        add('raw-table', node, snippet(text, 100));
      }
      REPRS.forEach(function (r) {
        var i = text.indexOf(r);
        if (i >= 0) { add('repr', node, snippet(text.slice(Math.max(0, i - 20), i + 60), 90)); }
      });
    });

    // 3. doubled references: "exercise Exercise 3", "Eq. ((3.1))"
    root.querySelectorAll('a.reference, a[href]').forEach(function (a) {
      if (a.closest('.cell_input, pre, code, nav, .headerlink, .toctree-wrapper') || a.classList.contains('headerlink')) { return; }
      var linkText = (a.textContent || '').replace(/\s+/g, ' ').trim();
      if (!linkText) { return; }
      var before = textBefore(a);
      var first = linkText.match(/^([A-Za-z][A-Za-z]+\.?)/);
      var last = before.match(/([A-Za-z][A-Za-z]+\.?)\s+$/);
      if (first && last && norm(first[1]) === norm(last[1])) {
        add('doubled-ref', a, snippet(before.slice(-25) + linkText, 70));
      } else if (linkText.charAt(0) === '(' && /\(\s*$/.test(before)) {
        add('doubled-ref', a, snippet(before.slice(-25) + linkText, 70));
      }
    });

    // 4. alt text, 5. shrunk figures, and the loading of every local image
    var imgs = Array.prototype.slice.call(root.querySelectorAll('img'));
    var local = imgs.filter(function (i) { return !/^(https?:)?\/\//.test(i.getAttribute('src') || ''); });
    var failed = local.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                      .map(function (i) { return i.getAttribute('src'); });
    var figures = local.filter(function (i) { return /_images\//.test(i.getAttribute('src') || ''); });
    imgs.forEach(function (img) {
      var alt = (img.getAttribute('alt') || '').trim();
      var src = img.getAttribute('src') || '';
      var base = src.split('/').pop();
      var fileLike = /^\S+\.(png|jpe?g|svg|gif|webp|pdf)$/i.test(alt) || (/^\S+$/.test(alt) && alt.indexOf('/') >= 0);
      if (!alt || alt === src || alt === base || fileLike) {
        add('alt', img, 'src ' + base + (alt ? ', alt "' + snippet(alt, 60) + '"' : ', no alt'));
      }
      if (img.complete && img.naturalWidth > 0 && img.getClientRects().length) {
        var ratio = img.clientWidth / img.naturalWidth;
        if (ratio < MIN_RATIO) {
          add('shrunk', img, base + ' shown ' + img.clientWidth + ' px wide of its natural ' +
              img.naturalWidth + ' px (' + Math.round(100 * ratio) + '%)');
        }
      }
    });

    // 6. numbering per chapter
    var h1 = root.querySelector('h1');
    var secnum = h1 && h1.querySelector('.section-number');
    var chapter = secnum ? parseInt(secnum.textContent, 10) : EXPECTED_CHAPTER;
    var numbers = [];
    root.querySelectorAll('.eqno').forEach(function (e) { numbers.push(['equation', e]); });
    root.querySelectorAll('.caption-number').forEach(function (e) { numbers.push(['caption', e]); });
    var numbered = 0;
    if (chapter !== null && !isNaN(chapter)) {
      numbers.forEach(function (pair) {
        var label = pair[1].textContent.replace(/\s+/g, ' ').trim();
        var m = label.match(/(\d+(?:\.\d+)*)/);
        if (!m) { return; }
        numbered++;
        if (!new RegExp('^' + chapter + '\\.\\d+$').test(m[1])) {
          add('numbering', pair[1], pair[0] + ' "' + label + '" on the page of chapter ' + chapter +
              ' (expected ' + chapter + '.k)');
        }
      });
    }

    // 7. widget views
    root.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').forEach(function (s) {
      add('widget', s, 'a widget-view output (its Python callbacks cannot run here): tag the cell ' +
          'remove-output and show its static twin');
    });
    root.querySelectorAll('.jupyter-widgets, [class^="widget-"], [class*=" widget-"]').forEach(function (w) {
      if (w.getClientRects().length && !(w.parentElement && w.parentElement.closest('.jupyter-widgets'))) {
        add('widget', w, 'a visible widget element');
      }
    });

    // maths
    var maths = root.querySelectorAll('.math');
    var rendered = 0;
    maths.forEach(function (m) { if (m.querySelector('mjx-container')) { rendered++; } });
    var undefinedMacros = Array.prototype.slice.call(
        document.querySelectorAll('mjx-assistive-mml mtext[mathcolor="red"]'))
      .map(function (e) { return e.textContent.trim(); })
      .filter(function (t) { return t.charAt(0) === '\\'; });
    return {
      defects: defects,
      chapter: (chapter !== null && !isNaN(chapter)) ? chapter : null,
      numbered: numbered,
      maths: {total: maths.length, rendered: rendered,
              containers: document.querySelectorAll('mjx-container').length,
              errors: document.querySelectorAll('mjx-merror, [data-mjx-error]').length + undefinedMacros.length,
              errorText: undefinedMacros.slice(0, 10)},
      images: {total: local.length, loaded: local.length - failed.length, failed: failed,
               figures: figures.length,
               figuresLoaded: figures.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length},
      height: Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)
    };
  }
  function record(state) {
    var report;
    try { report = inspect(); } catch (e) { report = {error: String(e && e.stack || e)}; }
    report.state = state;
    var json = JSON.stringify(report);
    document.body.setAttribute('data-rc-report', btoa(unescape(encodeURIComponent(json))));
  }
  window.addEventListener('load', function () {
    var tries = 0;
    var hasMathJax = !!document.querySelector('script[src*="mathjax"]');
    (function wait() {
      if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
        MathJax.startup.promise.then(function () { record('typeset'); },
                                     function () { record('mathjax-failed'); });
      } else if (!hasMathJax && !document.querySelector('.math')) {
        record('no-maths');
      } else if (tries++ < 300) {
        setTimeout(wait, 100);
      } else {
        record('no-mathjax');
      }
    })();
  });
})();
