/* Systimz player embed: mounts the avatar's talk page in an isolated frame. */
(function () {
  var script = document.currentScript;
  var target = script && script.getAttribute("data-systimz-target");
  var host = target ? document.getElementById(target) : null;
  var frame = document.createElement("iframe");
  // The page that embeds the player; the server records it only if it is an allowed origin.
  frame.src = "{{ frame_url|escapejs }}" + "&parent=" + encodeURIComponent(window.location.origin);
  frame.title = "{{ title|escapejs }}";
  frame.allow = "microphone; autoplay";
  frame.setAttribute("loading", "lazy");
  frame.style.border = "0";
  frame.style.width = (script && script.getAttribute("data-width")) || "100%";
  frame.style.height = (script && script.getAttribute("data-height")) || "640px";
  frame.style.maxWidth = "100%";
  frame.className = "systimz-player";
  if (host) {
    host.appendChild(frame);
  } else if (script && script.parentNode) {
    script.parentNode.insertBefore(frame, script.nextSibling);
  } else {
    document.body.appendChild(frame);
  }
})();
